"""The systemd units in packaging/systemd and the data files an installed wheel must carry."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.profiles import list_profiles

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "packaging" / "systemd"
UNIT_NAMES = ["harkd.service", "harkd.slice", "media.slice", "harkd-media-sim.service", "harkd-rescorer.service",
              "harkd-contacts.service", "harkd-contacts.timer"]


def unit_settings(name: str) -> dict[str, list[str]]:
    """KEY -> every value it is given in the unit file (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key)
    assert values is not None, f"{key}= is not set"
    return values[-1]


# ------------------------------------------------------------------------------------------ units


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify insists that ExecStart's program exists: point it at a stand-in in a copy of the units.
    program = tmp_path / "bin" / "harkd"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    copies = []
    for name in UNIT_NAMES:
        text = (UNITS / name).read_text()
        assert "ExecStart=/usr/bin/harkd " in text or not name.endswith(".service")
        copy = tmp_path / name
        copy.write_text(text.replace("ExecStart=/usr/bin/harkd ", f"ExecStart={program} "))
        copies.append(str(copy))
    proc = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True, timeout=120,
                          check=False)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines()
            if str(tmp_path) in line or any(name in line for name in UNIT_NAMES)]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_rescorer_unit_runs_harkd_rescore_hardened() -> None:
    s = unit_settings("harkd-rescorer.service")
    assert one(s, "ExecStart") == "/usr/bin/harkd rescore --config /etc/harkd/harkd.yaml"
    assert one(s, "Type") == "notify" and one(s, "NotifyAccess") == "main"  # harkd rescore sends READY=1
    assert one(s, "RestartPreventExitStatus") == "1 2"  # the command's exit status for bad config / missing files
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateDevices": "yes",
                       "User": "harkd", "MemoryDenyWriteExecute": "yes"}.items():
        assert one(s, key) == value, key


def test_contacts_unit_runs_harkd_contacts_sync() -> None:
    assert one(unit_settings("harkd-contacts.service"), "ExecStart").startswith("/usr/bin/harkd contacts sync")


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    # The check above can fail: a unit whose program is missing is refused.
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    copy = tmp_path / "harkd.service"
    copy.write_text((UNITS / "harkd.service").read_text().replace("/usr/bin/harkd", str(tmp_path / "none")))
    shutil.copy(UNITS / "harkd.slice", tmp_path / "harkd.slice")
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode != 0 and "is not executable" in proc.stdout + proc.stderr


def test_service_is_a_hardened_notify_service() -> None:
    s = unit_settings("harkd.service")
    expected = {
        "Type": "notify", "Slice": "harkd.slice", "User": "harkd", "SupplementaryGroups": "audio",
        "StateDirectory": "harkd", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "NoNewPrivileges": "yes", "DevicePolicy": "closed", "DeviceAllow": "char-alsa rw",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK", "Restart": "on-failure",
        "ExecStart": "/usr/bin/harkd run --config /etc/harkd/harkd.yaml",
        "MemoryDenyWriteExecute": "no",
    }
    for key, value in expected.items():
        assert one(s, key) == value, key
    assert re.fullmatch(r"\d+s", one(s, "WatchdogSec")) and re.fullmatch(r"\d+s", one(s, "RestartSec"))
    assert "PrivateDevices" not in s  # it would hide /dev/snd


def test_harkd_outweighs_media_playback() -> None:
    harkd = int(one(unit_settings("harkd.slice"), "CPUWeight"))
    media = int(one(unit_settings("media.slice"), "CPUWeight"))
    assert harkd > media
    assert one(unit_settings("harkd-media-sim.service"), "Slice") == "media.slice"
    assert all(profile.cpu_weight > media for profile in list_profiles())


MDWE_PROBE = r"""
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN: what MemoryDenyWriteExecute does
    print(json.dumps({"supported": False}))
    sys.exit(0)
import sounddevice
try:
    sounddevice.InputStream(device="harkdmdwe", channels=1, samplerate=16000, dtype="int16",
                            callback=lambda *args: None).close()
    print(json.dumps({"supported": True, "error": None}))
except Exception as exc:
    print(json.dumps({"supported": True, "error": str(exc)}))
"""


def test_memory_deny_write_execute_would_break_the_microphone(alsa_devices: Any) -> None:
    # The unit leaves MemoryDenyWriteExecute off because of this; if it starts passing, turn it on.
    import numpy as np

    alsa_devices.add_file_device("harkdmdwe", np.zeros(160, dtype=np.int16))
    result = alsa_devices.run_python(MDWE_PROBE)
    if not result["supported"]:
        pytest.skip(f"kernel {platform.release()} has no PR_SET_MDWE (needs Linux 6.3+)")
    assert result["error"] is not None and "write+execute" in result["error"], (
        "sounddevice now works under MemoryDenyWriteExecute: consider enabling it in harkd.service")


# ------------------------------------------------------------------------------------------ wheel


def _copy_tree(destination: Path) -> None:
    ignore = shutil.ignore_patterns(".venv", ".git", "work", "build", "dist", "*.egg-info", "__pycache__",
                                    ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.tflite", "*.pt")
    shutil.copytree(REPO, destination, ignore=ignore, symlinks=True)


def test_installed_wheel_carries_profiles_defaults_and_commands(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this environment")
    source, dist, target = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
    _copy_tree(source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
                   check=True, capture_output=True, timeout=300, env=env)
    (wheel,) = dist.glob("harkd-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300, env=env)
    probe = (
        "import json, daemon, daemon.commands.check_config, daemon.commands.devices\n"
        "from daemon.profiles import list_profiles, profiles_dir\n"
        "from daemon.config import DEFAULTS_PATH, load_config\n"
        "config = load_config(None, profile_name='pi-4')\n"
        "print(json.dumps({'daemon': daemon.__file__, 'profiles_dir': str(profiles_dir()),\n"
        "  'profiles': [p.name for p in list_profiles()], 'defaults': str(DEFAULTS_PATH),\n"
        "  'threads': config.recognizer.threads}))\n"
    )
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False, env={**clean_env, "PYTHONPATH": str(target)})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.splitlines()[-1])
    assert info["daemon"].startswith(str(target))  # the installed copy, not the checkout
    assert info["profiles_dir"] == str(target / "daemon" / "firmware_profiles")
    assert info["profiles"] == sorted(p.name for p in list_profiles())
    assert info["defaults"].startswith(str(target)) and info["threads"] == 2

"""packaging/systemd/harkd-rescorer.service: systemd accepts it, and it runs the command this package provides."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "systemd" / "harkd-rescorer.service"


def settings() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_systemd_analyze_verify_accepts_the_rescorer_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify insists that ExecStart's program exists: point it at a stand-in in a copy of the unit.
    program = tmp_path / "bin" / "harkd"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/harkd " in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("ExecStart=/usr/bin/harkd ", f"ExecStart={program} "))
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120, check=False)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if str(tmp_path) in line or UNIT.name in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_rescorer_unit_runs_harkd_rescore_hardened() -> None:
    s = settings()
    assert s["ExecStart"] == "/usr/bin/harkd rescore --config /etc/harkd/harkd.yaml"
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"  # harkd rescore sends READY=1
    assert s["RestartPreventExitStatus"] == "1 2"  # the command's exit status for bad config / missing files
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateDevices": "yes",
                       "User": "harkd", "MemoryDenyWriteExecute": "yes"}.items():
        assert s[key] == value, key

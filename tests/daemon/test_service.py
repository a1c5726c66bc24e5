"""``harkd run`` as a process: readiness, watchdog and status over a real NOTIFY_SOCKET, clean stops, start-up
errors that exit non-zero with a clear message, and a missing microphone that does not stop the daemon."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from daemon_process import REPO_ROOT, Harkd, NotifyListener, base_env, write_config

from daemon.messages import Metrics, Status, decode

RECORDING = REPO_ROOT / "daemon" / "samples" / "commands.wav"


def mqtt_settings(broker: Any) -> dict[str, Any]:
    return {"host": broker.host, "port": broker.port, "reconnect_min_s": 0.2, "reconnect_max_s": 1}


def test_ready_watchdog_status_and_stopping_reach_systemd(tmp_path: Path, mosquitto: Any, mqtt_collector: Any,
                                                          recognizer_model: tuple[Path, bool]) -> None:
    config = write_config(tmp_path / "harkd.yaml", {
        "device_id": "notified",
        "audio": {"source": "file", "file": str(RECORDING)},
        "recognizer": {"model_dir": str(recognizer_model[0]), "threads": 1},
        "mqtt": mqtt_settings(mosquitto),
        "metrics": {"interval_s": 0},
    })
    notify = NotifyListener(tmp_path / "notify.sock")
    env = base_env({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
    try:
        with Harkd(config, env) as harkd:
            ready_at, ready = notify.wait_for(lambda f: f.get("READY") == "1", 60)
            # Ready means working: the broker already has the retained "online" status.
            collector = mqtt_collector(["harkd/notified/status"])
            online = decode(Status, collector.get(5).payload)
            # The recording says "hey jarvis" before each command: utterances start on the shipped wake model.
            assert online.state == "online" and online.models["wake"].startswith("harkd-wake")
            time.sleep(1.2)
            status = harkd.stop()
            log = harkd.log()
    finally:
        notify.close()
    assert status == 0, log[-3000:]
    assert "listening (harkd-wake" in ready["STATUS"] and "MQTT connected" in ready["STATUS"]
    notes = notify.fields()
    before = [f["STATUS"] for t, f in notes if t < ready_at and "STATUS" in f]
    assert any("loading the recogniser" in s for s in before)
    assert any("connecting to the MQTT broker" in s for s in before)
    pings = [t for t, f in notes if f.get("WATCHDOG") == "1" and t > ready_at]
    assert len(pings) >= 4  # every half of WATCHDOG_USEC (0.2 s), from the pipeline thread
    assert max(b - a for a, b in itertools.pairwise(pings)) < 0.4
    stopping = [f for t, f in notes if f.get("STOPPING") == "1"]
    assert stopping and "stop requested" in stopping[0]["STATUS"]
    assert decode(Status, collector.get(5).payload).state == "offline"
    assert "Traceback" not in log


def run_briefly(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", "run", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_bad_configuration_exits_non_zero_listing_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "harkd.yaml"
    config.write_text("profile: none\nmqtt:\n  port: 99999\naudoi:\n  source: mic\n", encoding="utf-8")
    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        result = run_briefly(["--config", str(config)], base_env({"NOTIFY_SOCKET": str(notify.path)}))
        _, note = notify.wait_for(lambda f: "STATUS" in f, 5)
    finally:
        notify.close()
    assert result.returncode == 1
    assert "2 problems in the configuration" in result.stderr
    assert "mqtt.port" in result.stderr and "did you mean 'audio'" in result.stderr
    assert "Traceback" not in result.stderr
    assert note["STATUS"].startswith("cannot start: the configuration is invalid")
    assert not any(f.get("READY") for _, f in notify.fields())


def test_missing_model_exits_non_zero_naming_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "harkd.yaml", {"recognizer": {"model_dir": str(tmp_path / "nowhere")}})
    result = run_briefly(["--config", str(config)], base_env())
    assert result.returncode == 2
    assert f"recogniser model: {tmp_path / 'nowhere'}: no model card" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_audio_file_exits_non_zero(tmp_path: Path, recognizer_model: tuple[Path, bool]) -> None:
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are not samples\n")
    config = write_config(tmp_path / "harkd.yaml", {
        "audio": {"source": "file", "file": str(not_audio)},
        "recognizer": {"model_dir": str(recognizer_model[0])},
        "wake": {"engine": "vad"},
    })
    result = run_briefly(["--config", str(config)], base_env())
    assert result.returncode == 2
    assert f"audio: cannot read audio file {not_audio}" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_microphone_keeps_the_daemon_running_and_says_so(
        tmp_path: Path, alsa_devices: Any, mosquitto: Any, mqtt_collector: Any,
        recognizer_model: tuple[Path, bool]) -> None:
    collector = mqtt_collector(["harkd/nomic/status", "harkd/nomic/metrics"])
    config = write_config(tmp_path / "harkd.yaml", {
        "device_id": "nomic",
        "audio": {"source": "mic", "device": "harkd-no-such-mic", "retry_max_s": 0.5},
        "recognizer": {"model_dir": str(recognizer_model[0]), "threads": 1},
        "wake": {"engine": "vad"},
        "mqtt": mqtt_settings(mosquitto),
        "metrics": {"interval_s": 0.5},
    })
    notify = NotifyListener(tmp_path / "notify.sock")
    env = base_env({"NOTIFY_SOCKET": str(notify.path), "ALSA_CONFIG_PATH": alsa_devices.env()["ALSA_CONFIG_PATH"]})
    try:
        with Harkd(config, env) as harkd:
            _, ready = notify.wait_for(lambda f: f.get("READY") == "1", 60)
            assert "waiting for microphone 'harkd-no-such-mic'" in ready["STATUS"]
            online = decode(Status, collector.get(5).payload)
            metrics: list[Metrics] = []
            deadline = time.monotonic() + 5
            while len(metrics) < 3 and time.monotonic() < deadline:
                message = collector.get(5)
                if message.topic.endswith("/metrics"):
                    metrics.append(decode(Metrics, message.payload))
            assert harkd.running  # no crash, no exit
            status = harkd.stop()
            log = harkd.log()
    finally:
        notify.close()
    assert online.state == "online"
    assert len(metrics) == 3
    assert all(m.extra["audio_state"] == "waiting" for m in metrics)
    assert "harkd-no-such-mic" in str(metrics[-1].extra["audio_status"])
    assert metrics[-1].extra["mqtt_connected"] is True
    assert status == 0, log[-3000:]
    assert "Traceback" not in log


def test_audio_ending_stops_the_daemon_after_delivering_everything(
        tmp_path: Path, mosquitto: Any, mqtt_collector: Any, recognizer_model: tuple[Path, bool]) -> None:
    short = tmp_path / "short.wav"
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    voiced = 0.1 * 32767 * np.sin(2 * np.pi * 200 * t)
    samples = np.concatenate([rng.normal(size=8000) * 30, voiced, rng.normal(size=3200) * 30])
    sf.write(short, samples.astype(np.int16), 16000)  # ends 0.2 s after the speech: mid-utterance
    collector = mqtt_collector(["harkd/short/lattice"])
    config = write_config(tmp_path / "harkd.yaml", {
        "device_id": "short",
        "audio": {"source": "file", "file": str(short), "pace": "fast"},
        "recognizer": {"model_dir": str(recognizer_model[0]), "threads": 1},
        "wake": {"engine": "vad"},
        "mqtt": mqtt_settings(mosquitto),
    })
    with Harkd(config, base_env()) as harkd:
        assert harkd.wait(60) == 0, harkd.log()[-3000:]
    final = collector.get(5)
    assert b'"kind":"final"' in final.payload  # the utterance cut by the end of the file was published

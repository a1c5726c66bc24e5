"""The rescorer against a real mosquitto on loopback (fixtures in tests/conftest.py), in a thread and as a process."""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.lattice import Lattice
from daemon.messages import Result, decode
from daemon.mqtt import MqttSettings
from rescorer.arpa import NgramLM
from rescorer.rescore import Rescorer
from rescorer.service import RescorerService

REPO = Path(__file__).resolve().parents[2]
LIKED, DISLIKED = "set a timer for ten minutes", "set a time for ten minutes"


def settings_for(broker: Any, protocol: str = "5") -> MqttSettings:
    return MqttSettings(device_id="cloud", host=broker.host, port=broker.port, protocol=protocol,  # type: ignore[arg-type]
                        reconnect_min_s=0.1, reconnect_max_s=0.5)


@pytest.fixture
def make_service(corpus_lm: NgramLM) -> Iterator[Callable[..., RescorerService]]:
    made: list[RescorerService] = []

    def make(settings: MqttSettings, *, start: bool = True) -> RescorerService:
        service = RescorerService(settings, Rescorer(corpus_lm))
        made.append(service)
        if start:
            service.start()
            assert service.wait_subscribed(10), "the rescorer did not subscribe"
        return service

    yield make
    for service in made:
        service.stop()


def lattice_topic(device: str) -> str:
    return f"harkd/{device}/lattice"


def result_of(received: Any) -> Result:
    return decode(Result, received.payload)  # validates against daemon/schemas/result.schema.json


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_final_lattice_is_answered_and_speculative_is_not(
    protocol: str, mosquitto: Any, mqtt_collector: Callable[..., Any], make_service: Callable[..., RescorerService],
    make_lattice: Callable[..., Lattice],
) -> None:
    service = make_service(settings_for(mosquitto, protocol))
    collector = mqtt_collector(["harkd/+/result"])
    speculative = make_lattice([(DISLIKED, -10.0, 0.0)], kind="speculative", seq=0)
    final = make_lattice([(DISLIKED, -10.0, 0.0), (LIKED, -10.5, 0.0)], seq=1, utterance_id=speculative.utterance_id)
    collector.publish(lattice_topic("kitchen"), speculative.to_json())
    collector.publish(lattice_topic("kitchen"), final.to_json())

    (received,) = collector.take(1)
    assert received.topic == "harkd/kitchen/result" and received.qos == 1
    result = result_of(received)  # handled in order: a result for the speculative lattice would come first
    assert (result.utterance_id, result.device_id, result.seq, result.kind, result.text, result.source) == (
        final.utterance_id, "kitchen", 1, "final", LIKED, "rescorer")
    assert collector.quiet(0.5) == []
    stats = service.stats()
    assert (stats.received, stats.speculative, stats.answered, stats.rejected) == (2, 1, 1, 0)


def test_malformed_payloads_are_logged_and_skipped(
    mosquitto: Any, mqtt_collector: Callable[..., Any], make_service: Callable[..., RescorerService],
    make_lattice: Callable[..., Lattice], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rescorer")
    service = make_service(settings_for(mosquitto))
    collector = mqtt_collector(["harkd/+/result"])
    wrong_device = make_lattice([(LIKED, -10.0, 0.0)], device_id="hall")
    bad_schema = make_lattice([(LIKED, -10.0, 0.0)]).to_dict()
    bad_schema["kind"] = "maybe"
    for payload in (b"this is not json {", json.dumps({"schema": "harkd.lattice/1"}).encode(),
                    json.dumps(bad_schema).encode(), wrong_device.to_json()):
        collector.publish(lattice_topic("kitchen"), payload)
    good = make_lattice([(LIKED, -10.0, 0.0)], device_id="kitchen")
    collector.publish(lattice_topic("kitchen"), good.to_json())

    (received,) = collector.take(1)
    assert result_of(received).utterance_id == good.utterance_id
    assert collector.quiet(0.3) == []
    assert service.stats().rejected == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4 and all("skipped a malformed lattice on harkd/kitchen/lattice" in w for w in warnings)
    assert "payload is not JSON" in warnings[0]
    assert "$: 'utterance_id' is a required property" in warnings[1]
    assert "$.kind: 'maybe' is not one of" in warnings[2]
    assert "device_id 'hall' is not the topic's device 'kitchen'" in warnings[3]


def test_starts_without_a_broker_and_reconnects_after_an_outage(
    mosquitto: Any, mqtt_collector: Callable[..., Any], make_service: Callable[..., RescorerService],
    make_lattice: Callable[..., Lattice],
) -> None:
    mosquitto.stop()
    service = make_service(settings_for(mosquitto), start=False)
    service.start()  # the broker is down: paho keeps trying with back-off
    assert not service.wait_subscribed(0.5)
    mosquitto.start()
    assert service.wait_subscribed(15), "no connection once the broker came up"

    mosquitto.restart()  # an outage while running
    deadline = time.monotonic() + 15
    while service.stats().connections < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.wait_subscribed(15) and service.stats().connections >= 2
    collector = mqtt_collector(["harkd/+/result"])
    lattice = make_lattice([(LIKED, -10.0, 0.0)])
    collector.publish(lattice_topic("kitchen"), lattice.to_json())
    assert result_of(collector.get(10)).utterance_id == lattice.utterance_id


# ------------------------------------------------------------------------------------------ as a process


def harkd(*args: str, notify_socket: Path | None = None) -> subprocess.Popen[str]:
    """``harkd ARGS`` as a process (stdout and stderr together); systemd's NOTIFY_SOCKET only if given."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["PYTHONUNBUFFERED"] = "1"
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = str(notify_socket)
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture
def notify_socket() -> Iterator[tuple[Path, socket.socket]]:
    """A datagram socket standing in for systemd's notification socket (short path: AF_UNIX limits it)."""
    directory = Path(tempfile.mkdtemp(prefix="harkd-notify-"))
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield path, sock
    sock.close()
    shutil.rmtree(directory)


def notifications(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_harkd_rescore_process_answers_and_stops_on_sigterm(
    mosquitto: Any, mqtt_collector: Callable[..., Any], make_lattice: Callable[..., Lattice],
    corpus_lm_file: Path, tmp_path: Path, notify_socket: tuple[Path, socket.socket],
) -> None:
    config = tmp_path / "harkd.yaml"
    config.write_text("mqtt:\n  reconnect_min_s: 0.1\n  reconnect_max_s: 0.5\n")
    collector = mqtt_collector(["harkd/+/result"])
    process = harkd("rescore", "--config", str(config), "--host", mosquitto.host, "--port", str(mosquitto.port),
                    "--lm", str(corpus_lm_file), "--lm-weight", "0.5", notify_socket=notify_socket[0])
    try:
        # The process subscribes a moment after it starts: publish until a result comes back.
        deadline = time.monotonic() + 30
        result = None
        while result is None and time.monotonic() < deadline and process.poll() is None:
            lattice = make_lattice([(DISLIKED, -10.0, 0.0), (LIKED, -10.5, 0.0)], device_id="bedroom")
            collector.publish(lattice_topic("bedroom"), lattice.to_json())
            try:
                received = collector.get(1.0)
            except queue.Empty:
                continue
            result = result_of(received)
            assert received.topic == "harkd/bedroom/result" and result.utterance_id == lattice.utterance_id
        assert result is not None, "no result from the harkd rescore process"
        assert result.text == LIKED
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "rescorer: connected to" in output and "received SIGTERM" in output
    sent = notifications(notify_socket[1])
    assert any("READY=1" in n.splitlines() for n in sent) and "STOPPING=1" in sent[-1].splitlines(), sent


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--lm", "/nonexistent/lm.arpa"], 2, "cannot read the language model /nonexistent/lm.arpa"),
        (["--port", "0"], 1, "MQTT port must be 1..65535"),
        (["--lm-weight", "-1"], 1, "lm_weight must be a finite number >= 0"),
        (["--set", "mqtt.tls.enabled=true", "--set", "mqtt.tls.ca=/nonexistent/ca.pem"], 2, "MQTT TLS"),
    ],
)
def test_harkd_rescore_refuses_bad_settings(args: list[str], status: int, message: str, tmp_path: Path,
                                            corpus_lm_file: Path) -> None:
    config = tmp_path / "harkd.yaml"
    config.write_text("{}\n")
    lm = [] if "--lm" in args else ["--lm", str(corpus_lm_file)]
    process = harkd("rescore", "--config", str(config), *lm, *args)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == status and message in output, output


def test_harkd_rescore_help_names_the_options() -> None:
    process = harkd("rescore", "--help")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    for option in ("--host", "--port", "--prefix", "--lm", "--lm-weight", "--word-bonus", "--config"):
        assert option in output

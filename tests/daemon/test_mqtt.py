"""The publisher against a real mosquitto on loopback (fixtures in tests/conftest.py)."""

from __future__ import annotations

import json
import logging
import queue
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from daemon.config import parse_config
from daemon.lattice import Arc, Lattice, NBestEntry, Node
from daemon.messages import (
    BiasEntry,
    BiasSet,
    MediaDuck,
    Metrics,
    PayloadError,
    Reset,
    Result,
    Status,
    Wake,
    decode,
    encode,
)
from daemon.mqtt import MqttError, MqttSettings, Publisher, Topics, settings_from_config
from daemon.outbox import Outbox

SCHEMAS = Path(__file__).resolve().parents[2] / "daemon" / "schemas"
DEVICE = "kitchen"
UTT = "6f1d2c3b-4a59-4e8d-9c7b-1a2b3c4d5e6f"
MODELS = {"recognizer": "rnnt-test-1", "wake": "wake-test-1"}


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    v: jsonschema.protocols.Validator = cls(schema)
    return v


def lattice(seq: int, kind: str = "speculative", utterance_id: str = UTT, text: str = "call mom") -> Lattice:
    words = text.split()
    nodes = tuple(Node(i, 0.3 * i) for i in range(len(words) + 1))
    arcs = tuple(Arc(i, i + 1, w, 0.3 * i, 0.3 * (i + 1), -1.5, 0.5) for i, w in enumerate(words))
    best = NBestEntry(text, -1.5 * len(words), 0.5 * len(words))
    return Lattice(utterance_id, DEVICE, kind, seq, 10.0, 11.0, nodes, arcs, (best,), MODELS)  # type: ignore[arg-type]


def settings(broker: Any, **overrides: Any) -> MqttSettings:
    values: dict[str, Any] = {
        "device_id": DEVICE,
        "host": broker.host,
        "port": broker.port,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
    }
    values.update(overrides)
    return MqttSettings(**values)


@pytest.fixture
def make_publisher(tmp_path: Path) -> Iterator[Callable[..., Publisher]]:
    """Factory for started publishers over ``tmp_path/outbox.db``; all stopped after the test."""
    made: list[tuple[Publisher, Outbox]] = []

    def make(mqtt: MqttSettings, start: bool = True, **kwargs: Any) -> Publisher:
        box = Outbox(tmp_path / "outbox.db")
        publisher = Publisher(mqtt, box, models=MODELS, **kwargs)
        made.append((publisher, box))
        if start:
            publisher.start()
        return publisher

    yield make
    for publisher, box in made:
        publisher.stop(timeout=2)
        box.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def lattice_ids(received: list[Any]) -> list[tuple[str, str, int]]:
    out = []
    for message in received:
        document = json.loads(message.payload)
        validator("lattice").validate(document)
        out.append((document["utterance_id"], document["kind"], document["seq"]))
    return out


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_publishes_status_and_lattices_in_order(
    mosquitto: Any,
    mqtt_collector: Callable[..., Any],
    make_publisher: Callable[..., Publisher],
    protocol: str,
) -> None:
    topics = Topics(DEVICE)
    collector = mqtt_collector([f"harkd/{DEVICE}/#"], protocol=protocol)
    publisher = make_publisher(settings(mosquitto, protocol=protocol))
    assert publisher.wait_connected(10)

    status = collector.get()
    assert status.topic == topics.status
    document = json.loads(status.payload)
    validator("status").validate(document)
    assert (document["state"], document["models"]) == ("online", MODELS)
    assert document["uptime_s"] >= 0

    publisher.publish_wake(Wake(DEVICE, UTT, "hey hark", 0.93, 9.8))
    for seq, kind in [(0, "speculative"), (1, "speculative"), (2, "final")]:
        publisher.publish_lattice(lattice(seq, kind))
    publisher.publish_reset(Reset(DEVICE, UTT, 0, "speech_resumed"))
    received = collector.take(5)
    assert [m.topic for m in received] == [topics.wake] + [topics.lattice] * 3 + [topics.reset]
    assert all(m.qos == 1 for m in received)
    validator("wake").validate(json.loads(received[0].payload))
    validator("reset").validate(json.loads(received[4].payload))
    assert lattice_ids(received[1:4]) == [(UTT, "speculative", 0), (UTT, "speculative", 1), (UTT, "final", 2)]
    assert Lattice.from_json(received[3].payload) == lattice(2, "final")

    assert publisher.wait_idle(10)
    state = publisher.status()
    assert (state.connected, state.pending, state.in_flight, state.connections) == (True, 0, 0, 1)


def test_outage_and_restart_deliver_each_lattice_once_in_order(
    mosquitto: Any, mqtt_collector: Callable[..., Any], make_publisher: Callable[..., Publisher]
) -> None:
    topics = Topics(DEVICE)
    # a persistent session: the broker keeps the collector's subscription and queue across its restart
    collector = mqtt_collector([topics.lattice], protocol="3.1.1", persistent_session=True)
    first = make_publisher(settings(mosquitto))
    assert first.wait_connected(10)
    first.publish_lattice(lattice(0))
    assert lattice_ids(collector.take(1)) == [(UTT, "speculative", 0)]
    assert first.wait_idle(10)

    mosquitto.stop()
    wait_for(lambda: not first.connected)
    for seq in range(1, 6):
        first.publish_lattice(lattice(seq, "final" if seq == 5 else "speculative"))
    assert first.status().pending == 5
    first.stop(timeout=2)
    first.outbox.close()

    # the daemon restarts (same outbox file) while the broker is still away
    second = make_publisher(settings(mosquitto))
    time.sleep(0.5)
    state = second.status()
    assert (state.connected, state.pending) == (False, 5)
    assert state.last_error is not None and "cannot connect" in state.last_error

    mosquitto.start()
    assert second.wait_connected(10)
    assert second.wait_idle(10)
    received = collector.take(5)
    assert lattice_ids(received) == [(UTT, "speculative", s) for s in range(1, 5)] + [(UTT, "final", 5)]
    assert collector.quiet(1.0) == []  # nothing twice


def test_reconnects_by_itself_and_keeps_order(
    mosquitto: Any, mqtt_collector: Callable[..., Any], make_publisher: Callable[..., Publisher]
) -> None:
    topics = Topics(DEVICE)
    collector = mqtt_collector([topics.lattice, topics.wake], protocol="3.1.1", persistent_session=True)
    publisher = make_publisher(settings(mosquitto))
    assert publisher.wait_connected(10)

    mosquitto.stop()
    wait_for(lambda: not publisher.connected)
    publisher.publish_wake(Wake(DEVICE, UTT, "hey hark", 0.9, 1.0))
    for seq in range(3):
        publisher.publish_lattice(lattice(seq))
    assert publisher.publish_metrics(Metrics(DEVICE, 1.0)) is False  # not queued while away
    assert publisher.publish_media_duck(MediaDuck(DEVICE, True, UTT)) is False

    mosquitto.start()
    assert publisher.wait_connected(10)
    received = collector.take(4)
    assert received[0].topic == topics.wake
    assert lattice_ids(received[1:]) == [(UTT, "speculative", s) for s in range(3)]
    assert publisher.wait_idle(10)
    state = publisher.status()
    assert (state.connections, state.not_sent, state.pending) == (2, 2, 0)
    assert collector.quiet(0.5) == []


def test_messages_in_flight_when_the_connection_dies_are_sent_again_first(
    mosquitto: Any, mqtt_collector: Callable[..., Any], make_publisher: Callable[..., Publisher]
) -> None:
    topics = Topics(DEVICE)
    collector = mqtt_collector([topics.lattice])
    publisher = make_publisher(settings(mosquitto, keepalive_s=1))
    assert publisher.wait_connected(10)
    mosquitto.pause()  # PUBLISH packets reach the socket, no PUBACK comes back
    for seq in range(3):
        publisher.publish_lattice(lattice(seq))
    wait_for(lambda: publisher.status().in_flight == 3)
    wait_for(lambda: not publisher.connected)  # keepalive timeout
    for seq in range(3, 6):
        publisher.publish_lattice(lattice(seq))
    mosquitto.resume()
    assert publisher.wait_connected(10)
    assert publisher.wait_idle(10)
    # At least once: the broker may have passed on the first copies before it saw the connection close.
    seqs = [seq for _, _, seq in lattice_ids(collector.take(6))]
    seqs += [seq for _, _, seq in lattice_ids(collector.quiet(1.0))]
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == [0, 1, 2, 3, 4, 5]
    assert sorted(set(seqs[seqs.index(5) :])) == [5]  # nothing old after the newest


def test_metrics_and_duck_go_out_while_connected(
    mosquitto: Any, mqtt_collector: Callable[..., Any], make_publisher: Callable[..., Publisher]
) -> None:
    topics = Topics(DEVICE)
    collector = mqtt_collector([topics.metrics, topics.media_duck])
    publisher = make_publisher(settings(mosquitto))
    assert publisher.wait_connected(10)
    assert publisher.publish_media_duck(MediaDuck(DEVICE, True, UTT, 0.3))
    metrics = Metrics(DEVICE, 12.5, real_time_factor=0.4, lag_s=0.02, dropped_frames=0, cpu_percent=35.0)
    assert publisher.publish_metrics(metrics)
    duck, metric = collector.take(2)
    validator("media_duck").validate(json.loads(duck.payload))
    validator("metrics").validate(json.loads(metric.payload))
    assert Metrics.from_dict(json.loads(metric.payload)) == metrics

    # any topic: durable QoS 0 through the outbox, or straight out
    extra = mqtt_collector([topics.topic("custom/#")])
    publisher.publish(topics.topic("custom/a"), b"one", qos=0)
    assert publisher.send_now(topics.topic("custom/b"), b"two")
    assert sorted((m.topic.rsplit("/", 1)[1], m.payload) for m in extra.take(2)) == [("a", b"one"), ("b", b"two")]
    assert publisher.wait_idle(10)
    with pytest.raises(ValueError, match="cannot publish"):
        publisher.publish("harkd/+/x", b"")


def test_malformed_inbound_messages_are_ignored(
    mosquitto: Any,
    mqtt_collector: Callable[..., Any],
    make_publisher: Callable[..., Publisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    topics = Topics(DEVICE)
    inbound: queue.Queue[object] = queue.Queue()

    def on_bias(bias: BiasSet) -> None:
        if bias.version == "boom":
            raise RuntimeError("handler bug")
        inbound.put(bias)

    publisher = make_publisher(settings(mosquitto), on_bias_set=on_bias, on_result=inbound.put)
    assert publisher.wait_connected(10)
    sender = mqtt_collector([topics.lattice])
    good_bias = BiasSet((BiasEntry("Ana Lucía", 2.0),), (BiasEntry("kitchen lights"),), "v7")
    good_result = Result(UTT, "call ana lucia", DEVICE, 2, "final", -3.2, "rescorer")
    with caplog.at_level(logging.WARNING, logger="daemon.mqtt"):
        sender.publish(topics.bias_set, b"{not json")
        sender.publish(topics.bias_set, b'{"schema": "harkd.bias/1", "version": "v8"}')
        sender.publish(topics.bias_set, b"\xff\xfe\x00")
        sender.publish(topics.bias_set, b"")  # clears a retained message: ignored quietly
        sender.publish(topics.bias_set, encode(BiasSet(version="boom")))
        sender.publish(topics.result, b'{"schema": "harkd.result/1", "utterance_id": "x", "text": 5}')
        sender.publish(topics.bias_set, encode(good_bias))
        sender.publish(topics.result, encode(good_result))
        first, second = inbound.get(timeout=5), inbound.get(timeout=5)
    assert (first, second) == (good_bias, good_result)
    assert inbound.empty()
    state = publisher.status()
    assert state.connected and state.inbound_rejected == 4
    messages = [r.getMessage() for r in caplog.records]
    assert any("malformed message on harkd/kitchen/bias/set: payload is not JSON" in m for m in messages)
    assert any("bias/set" in m and "is not valid under any of the given schemas" in m for m in messages)
    assert any("not UTF-8" in m for m in messages)
    assert any("$.utterance_id" in m and "$.text" in m for m in messages)
    assert any("handler for harkd/kitchen/bias/set failed" in m for m in messages)
    # and it still publishes
    publisher.publish_lattice(lattice(0))
    assert lattice_ids(sender.take(1)) == [(UTT, "speculative", 0)]


def test_last_will_and_clean_stop_say_offline(
    mosquitto: Any,
    mqtt_collector: Callable[..., Any],
    make_publisher: Callable[..., Publisher],
    tmp_path: Path,
) -> None:
    topics = Topics(DEVICE)
    script = (
        "import sys, time\n"
        "from daemon.mqtt import MqttSettings, Publisher\n"
        "from daemon.outbox import Outbox\n"
        "s = MqttSettings(device_id='kitchen', host='127.0.0.1', port=int(sys.argv[1]))\n"
        "p = Publisher(s, Outbox(sys.argv[2]))\n"
        "p.start()\n"
        "print('ready' if p.wait_connected(10) else 'failed', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(mosquitto.port), str(tmp_path / "child.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        watcher = mqtt_collector([topics.status])
        assert json.loads(watcher.get().payload)["state"] == "online"
        process.kill()  # no DISCONNECT: the broker publishes the Will
        assert json.loads(watcher.get().payload)["state"] == "offline"
    finally:
        process.kill()
        process.wait(10)
    late = mqtt_collector([topics.status])  # the Will was retained
    document = json.loads(late.get().payload)
    validator("status").validate(document)
    assert document["state"] == "offline"

    publisher = make_publisher(settings(mosquitto))
    assert publisher.wait_connected(10)
    assert json.loads(late.get().payload)["state"] == "online"
    publisher.stop()
    assert json.loads(late.get().payload)["state"] == "offline"


def test_hermes_compatibility(
    mosquitto: Any, mqtt_collector: Callable[..., Any], make_publisher: Callable[..., Publisher]
) -> None:
    collector = mqtt_collector(["hermes/#"])
    publisher = make_publisher(settings(mosquitto, hermes=True))
    assert publisher.wait_connected(10)
    publisher.publish_wake(Wake(DEVICE, UTT, "hey hark", 0.9, 1.0))
    publisher.publish_lattice(lattice(0, "speculative"))  # only final lattices are "text captured"
    publisher.publish_lattice(lattice(1, "final"))
    detected, captured = collector.take(2)
    assert detected.topic == "hermes/hotword/default/detected"
    assert json.loads(detected.payload)["siteId"] == DEVICE
    assert captured.topic == "hermes/asr/textCaptured"
    document = json.loads(captured.payload)
    assert (document["text"], document["likelihood"], document["sessionId"]) == ("call mom", 1.0, UTT)
    assert document["seconds"] == pytest.approx(1.0)


def test_settings_and_topics() -> None:
    topics = Topics("kitchen", "home/harkd")
    assert topics.all() == {
        "status": "home/harkd/kitchen/status",
        "wake": "home/harkd/kitchen/wake",
        "lattice": "home/harkd/kitchen/lattice",
        "reset": "home/harkd/kitchen/reset",
        "result": "home/harkd/kitchen/result",
        "bias/set": "home/harkd/kitchen/bias/set",
        "media/duck": "home/harkd/kitchen/media/duck",
        "metrics": "home/harkd/kitchen/metrics",
    }
    for bad in ("kit/chen", "kitchen#", "", "+"):
        with pytest.raises(MqttError, match="device id"):
            Topics(bad)
    with pytest.raises(MqttError, match="tls is off"):
        MqttSettings(device_id="kitchen", ca_certs="/etc/ssl/ca.pem")
    with pytest.raises(MqttError, match="protocol"):
        MqttSettings(device_id="kitchen", protocol="4")  # type: ignore[arg-type]
    secret = MqttSettings(device_id="kitchen", username="u", password="hunter2")
    assert "hunter2" not in repr(secret)


def test_settings_from_config() -> None:
    config = parse_config(
        {
            "device_id": "kitchen",
            "mqtt": {
                "host": "broker.lan",
                "port": 8883,
                "protocol": "3.1.1",
                "username": "u",
                "password": "p",
                "qos": 2,
                "hermes": True,
                "tls": {"enabled": True, "ca": "/etc/ssl/ca.pem", "insecure": True},
            },
        }
    )
    s = settings_from_config(config)
    assert (s.device_id, s.host, s.port, s.protocol, s.username, s.password, s.qos) == (
        "kitchen",
        "broker.lan",
        8883,
        "3.1.1",
        "u",
        "p",
        2,
    )
    assert (s.tls, s.ca_certs, s.certfile, s.tls_insecure, s.hermes) == (True, "/etc/ssl/ca.pem", None, True, True)
    assert settings_from_config(parse_config({"device_id": "kitchen"})) == MqttSettings(device_id="kitchen")


def test_refuses_messages_for_another_device(mosquitto: Any, make_publisher: Callable[..., Publisher]) -> None:
    publisher = make_publisher(settings(mosquitto), start=False)
    other = lattice(0)
    with pytest.raises(ValueError, match="device 'hall'"):
        publisher.publish_lattice(Lattice(UTT, "hall", "final", 0, 0.0, 1.0, other.nodes, other.arcs, other.nbest))


# -- TLS and passwords --------------------------------------------------------------------------------------


def run_tool(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_broker(tmp_path: Path, make_mosquitto: Callable[..., Any]) -> tuple[Any, str]:
    """mosquitto with a TLS listener (certificate for IP 127.0.0.1 only) and a password file; and the CA."""
    if not (shutil.which("openssl") and shutil.which("mosquitto_passwd")):
        pytest.skip("openssl and mosquitto_passwd are needed for the TLS test")
    d = tmp_path / "tls"
    d.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2")
    run_tool(
        "openssl",
        "req",
        "-x509",
        *ec,
        "-keyout",
        f"{d}/ca.key",
        "-out",
        f"{d}/ca.crt",
        "-subj",
        "/CN=test CA",
    )
    run_tool("openssl", "req", *ec[:-2], "-keyout", f"{d}/srv.key", "-out", f"{d}/srv.csr", "-subj", "/CN=broker")
    (d / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    run_tool(
        *("openssl", "x509", "-req", "-in", f"{d}/srv.csr", "-CA", f"{d}/ca.crt", "-CAkey", f"{d}/ca.key"),
        *("-CAcreateserial", "-out", f"{d}/srv.crt", "-days", "2", "-extfile", f"{d}/san.ext"),
    )
    run_tool("mosquitto_passwd", "-c", "-b", f"{d}/passwd", "device", "s3cret")
    options = [
        f"cafile {d}/ca.crt",
        f"certfile {d}/srv.crt",
        f"keyfile {d}/srv.key",
        f"password_file {d}/passwd",
    ]
    return make_mosquitto(listener_options=options, allow_anonymous=False), str(d / "ca.crt")


def test_tls_with_password(tls_broker: tuple[Any, str], make_publisher: Callable[..., Publisher]) -> None:
    broker, ca = tls_broker
    tls = {"tls": True, "ca_certs": ca, "username": "device"}
    publisher = make_publisher(settings(broker, password="s3cret", **tls))
    assert publisher.wait_connected(10)
    publisher.publish_lattice(lattice(0))
    assert publisher.wait_idle(10)  # the broker acknowledged it

    wrong = make_publisher(settings(broker, password="wrong", client_id="harkd-wrong", **tls))
    wait_for(lambda: wrong.status().last_error is not None)
    assert not wrong.connected
    assert "refused: Not authorized" in str(wrong.status().last_error)

    # the certificate names 127.0.0.1, not "localhost": refused unless tls_insecure
    strict = make_publisher(settings(broker, host="localhost", password="s3cret", client_id="harkd-s", **tls))
    loose = make_publisher(
        settings(broker, host="localhost", password="s3cret", client_id="harkd-l", tls_insecure=True, **tls)
    )
    assert loose.wait_connected(10)
    wait_for(lambda: strict.status().last_error is not None)
    assert not strict.connected and strict.status().connections == 0


def test_tls_files_that_do_not_load(tmp_path: Path) -> None:
    with pytest.raises(MqttError, match="TLS"):
        Publisher(
            MqttSettings(device_id=DEVICE, tls=True, ca_certs=str(tmp_path / "missing.crt")),
            Outbox(tmp_path / "outbox.db"),
        )


# -- payloads ---------------------------------------------------------------------------------------------

PAYLOADS = [
    Status(DEVICE, "online", "0.1.0", MODELS, 12.5),
    Status(DEVICE, "offline"),
    Wake(DEVICE, UTT, "hey hark", 0.93, 9.8),
    Reset(DEVICE, UTT, 0, "final_differs"),
    Result(UTT, "call mom"),
    Result(UTT, "call mom", DEVICE, 2, "final", -3.5, "rescorer"),
    BiasSet((BiasEntry("Ana Lucía", 2.5), BiasEntry("Siobhan Okafor")), (BiasEntry("kitchen lights"),), "v1"),
    BiasSet.of(appliances=["aquarium pump"]),
    BiasSet(version="empty"),
    MediaDuck(DEVICE, True, UTT, 0.25),
    MediaDuck(DEVICE, False),
    Metrics(DEVICE, 3.0, 0.5, 0.01, 2, 40.0, 3, 0, {"wakes": 4, "model": "x"}),
]


@pytest.mark.parametrize("message", PAYLOADS, ids=lambda m: type(m).__name__)
def test_payloads_round_trip_and_match_their_schema_files(message: Any) -> None:
    document = message.to_dict()
    validator(message.SCHEMA_NAME).validate(document)
    assert document["schema"] == message.SCHEMA_ID
    assert type(message).from_dict(document) == message
    assert decode(type(message), encode(message)) == message


def test_payload_errors_say_where() -> None:
    with pytest.raises(PayloadError) as info:
        Wake.from_dict({"schema": "harkd.wake/1", "device_id": "a/b", "utterance_id": UTT, "phrase": "", "score": 2})
    message = str(info.value)
    assert "$.device_id" in message and "$.phrase" in message and "$.score" in message and "'time'" in message
    with pytest.raises(PayloadError, match="finite"):
        encode(Wake(DEVICE, UTT, "hey", float("nan"), 1.0))
    with pytest.raises(PayloadError, match=r"harkd\.status/1"):
        Status.from_dict({"schema": "harkd.status/2", "device_id": DEVICE, "state": "online"})
    with pytest.raises(PayloadError, match="not JSON"):
        decode(Result, b"[1, 2")

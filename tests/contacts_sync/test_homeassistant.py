"""Home Assistant MQTT discovery: the pure state, then live through a real mosquitto."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from radicale_server import free_port

from contacts_sync.homeassistant import DiscoveryState, entity_name
from contacts_sync.link import LinkError, SyncLink
from daemon.messages import BiasSet, decode
from daemon.mqtt import MqttSettings, Topics

P = "homeassistant"


def config(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def test_entity_names_follow_home_assistant() -> None:
    assert entity_name({"name": "Pump", "dev": {"name": "Aquarium"}}, "x") == "Aquarium Pump"
    assert entity_name({"name": "Kitchen light", "device": {"name": "Kitchen"}}, "x") == "Kitchen light"
    assert entity_name({"name": None, "device": {"name": "Aquarium pump"}}, "x") == "Aquarium pump"
    assert entity_name({"name": "Desk  lamp"}, "x") == "Desk lamp"
    assert entity_name({"unique_id": "abc"}, "hall_ceiling") == "hall ceiling"
    assert entity_name({"name": None}, "x") is None


def test_components_renames_and_removals() -> None:
    state = DiscoveryState(P)
    assert state.handle(f"{P}/light/hall_ceiling/config", config(name="Hall ceiling"))
    assert state.handle(f"{P}/switch/zigbee/aquarium_pump/config", config(name=None, dev={"name": "Aquarium pump"}))
    assert state.handle(f"{P}/media_player/tv/config", config(name="Lounge TV"))
    for component in ("fan", "climate", "cover", "lock"):
        assert state.handle(f"{P}/{component}/{component}1/config", config(name=f"Attic {component}"))
    # not a controllable kind, or not discovery at all
    assert not state.handle(f"{P}/sensor/temp/config", config(name="Hall temperature"))
    assert not state.handle(f"{P}/binary_sensor/door/config", config(name="Front door"))
    assert not state.handle("zigbee2mqtt/bridge/config", config(name="Bridge"))
    assert not state.handle(f"{P}/light/x/state", b"ON")
    assert state.names() == ["Aquarium pump", "Attic climate", "Attic cover", "Attic fan", "Attic lock",
                             "Hall ceiling", "Lounge TV"]
    # a rename replaces; the same config again changes nothing
    assert state.handle(f"{P}/light/hall_ceiling/config", config(name="Hallway ceiling"))
    assert not state.handle(f"{P}/light/hall_ceiling/config", config(name="Hallway ceiling"))
    assert "Hall ceiling" not in state.names() and "Hallway ceiling" in state.names()
    # an empty retained payload removes
    assert state.handle(f"{P}/media_player/tv/config", b"")
    assert "Lounge TV" not in state.names()


def test_broken_updates_are_ignored_with_a_warning() -> None:
    state = DiscoveryState(P)
    state.handle(f"{P}/light/desk/config", config(name="Desk lamp"))
    assert not state.handle(f"{P}/light/desk/config", b"{not json")
    assert not state.handle(f"{P}/light/desk/config", b"[1, 2]")
    assert not state.handle(f"{P}/light/desk/config", b"\xff\xfe")
    assert not state.handle(f"{P}/light/big/config", b"{" + b" " * 300_000 + b"}")
    assert state.names() == ["Desk lamp"]  # a broken update keeps the entity as it was
    warnings = state.take_warnings()
    assert len(warnings) == 4 and "not a JSON config" in warnings[0] and "too large" in warnings[3]
    assert state.take_warnings() == []


def test_device_discovery_with_several_components() -> None:
    state = DiscoveryState(P)
    topic = f"{P}/device/aquarium/config"
    payload = config(dev={"ids": "aq1", "name": "Aquarium"}, o={"name": "fw"},
                     cmps={"pump": {"p": "switch", "name": "Pump"}, "light": {"p": "light", "name": None},
                           "temp": {"p": "sensor", "name": "Temperature"}})
    assert state.handle(topic, payload)
    assert state.names() == ["Aquarium", "Aquarium Pump"]
    # the light component is removed by sending only its platform
    assert state.handle(topic, config(dev={"name": "Aquarium"}, cmps={"pump": {"p": "switch", "name": "Pump"},
                                                                     "light": {"p": "light"}}))
    assert state.names() == ["Aquarium Pump"]
    assert state.handle(topic, b"")
    assert state.names() == []


def test_entities_gone_while_disconnected_are_dropped_after_resubscribing() -> None:
    state = DiscoveryState(P)
    state.handle(f"{P}/light/a/config", config(name="Lamp A"))
    state.handle(f"{P}/light/b/config", config(name="Lamp B"))
    state.mark_all_unseen()
    state.handle(f"{P}/light/a/config", config(name="Lamp A"))  # retained again; b was removed meanwhile
    assert state.drop_unseen() == 1
    assert state.names() == ["Lamp A"]


# ------------------------------------------------------------------------------------------ over MQTT


def settings(broker: Any, **extra: Any) -> MqttSettings:
    return MqttSettings(device_id="kitchen", host=broker.host, port=broker.port, reconnect_min_s=0.1,
                        reconnect_max_s=0.5, keepalive_s=5, **extra)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_link_reads_retained_discovery_and_follows_changes(
    mosquitto: Any, mqtt_collector: Any, protocol: str
) -> None:
    ha = mqtt_collector([f"{P}/#"])
    ha.publish(f"{P}/light/hall/config", config(name="Hall ceiling"), retain=True)
    ha.publish(f"{P}/switch/pump/config", config(name=None, device={"name": "Aquarium pump"}), retain=True)
    ha.publish(f"{P}/sensor/t/config", config(name="Hall temperature"), retain=True)
    changed = threading.Event()
    state = DiscoveryState(P)
    link = SyncLink(settings(mosquitto, protocol=protocol), state, changed.set)
    link.connect()
    try:
        link.wait_settled(quiet_s=0.3, max_s=5)
        assert state.names() == ["Aquarium pump", "Hall ceiling"]
        changed.clear()
        ha.publish(f"{P}/light/hall/config", config(name="Hallway ceiling"), retain=True)  # a rename
        assert changed.wait(5)
        changed.clear()
        ha.publish(f"{P}/switch/pump/config", b"", retain=True)  # a removal
        assert changed.wait(5)
        assert state.names() == ["Hallway ceiling"]
        # and it publishes the bias list retained, where a late subscriber still finds it
        document = BiasSet.of(["Siobhan Okafor"], state.names(), version="v1")
        link.publish_bias(document)
    finally:
        link.close()
    late = mqtt_collector([Topics("kitchen").bias_set])
    message = late.get(5)
    assert message.retain and decode(BiasSet, message.payload) == document


def test_link_errors_are_clear(mosquitto: Any, make_mosquitto: Any) -> None:
    nobody = MqttSettings(device_id="kitchen", host="127.0.0.1", port=free_port())
    with pytest.raises(LinkError, match="cannot reach the MQTT broker"):
        SyncLink(nobody).connect(timeout_s=2)
    locked = make_mosquitto(allow_anonymous=False)
    started = time.monotonic()
    with pytest.raises(LinkError, match="refused the connection"):
        SyncLink(settings(locked)).connect(timeout_s=5)
    assert time.monotonic() - started < 4  # refused at once, not after the timeout

"""Home Assistant MQTT discovery: the names of the lights, switches, fans, climate devices, covers, locks and
media players it announces, kept current as they are renamed and removed.

Discovery configs are retained on ``<prefix>/<component>/[<node_id>/]<object_id>/config`` (one entity) and,
since Home Assistant 2024.11, ``<prefix>/device/<object_id>/config`` (a device with several components under
``cmps``). A new config on the same topic is a rename; an empty payload removes the entity (or the whole
device); in a device config, a component reduced to its platform (``{"p": "light"}``) is removed.

The name an entity goes by follows Home Assistant: the entity's ``name`` after its device's name ("Aquarium"
+ "Pump" -> "Aquarium Pump"), the device name alone when ``name`` is null, and the object id with
underscores as spaces when neither is given. Abbreviated keys (``dev``, ``cmps``, ``p``) are understood.

:class:`DiscoveryState` is pure (no MQTT): feed it ``(topic, payload)`` pairs. It is thread-safe, because
paho calls it from its network thread while the sync reads it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_DISCOVERY_PREFIX", "HA_COMPONENTS", "DiscoveredEntity", "DiscoveryState"]

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
#: The entity kinds whose names a user says to control them.
HA_COMPONENTS = ("light", "switch", "fan", "climate", "cover", "lock", "media_player")
MAX_DISCOVERY_PAYLOAD = 256 * 1024  # bytes; discovery configs are a few hundred bytes
MAX_ENTITIES = 5000
_MAX_WARNINGS = 50


@dataclass(frozen=True)
class DiscoveredEntity:
    key: str  # the config topic, plus "#<component id>" for device discovery
    component: str  # light, switch, ...
    name: str


def _device_name(config: Mapping[str, Any]) -> str | None:
    device = config.get("device", config.get("dev"))
    if isinstance(device, Mapping):
        name = device.get("name")
        if isinstance(name, str) and name.strip():
            return name.strip()
    return None


def entity_name(config: Mapping[str, Any], object_id: str, device_name: str | None = None) -> str | None:
    """The name Home Assistant would show for a discovered entity (see the module docstring)."""
    device_name = _device_name(config) or device_name
    if "name" in config:
        name = config["name"]
        if name is None:
            return device_name
        if isinstance(name, str) and name.strip():
            name = " ".join(name.split())
            if device_name and not name.lower().startswith(device_name.lower()):
                return f"{device_name} {name}"
            return name
    return device_name or (object_id.replace("_", " ").strip() or None)


class DiscoveryState:
    """The entities Home Assistant discovery currently announces; see the module docstring."""

    def __init__(self, prefix: str = DEFAULT_DISCOVERY_PREFIX, components: Iterable[str] = HA_COMPONENTS) -> None:
        self.prefix = prefix.rstrip("/")
        self.components = frozenset(components)
        self._lock = threading.Lock()
        self._entities: dict[str, DiscoveredEntity] = {}
        self._unseen: set[str] = set()
        self._warnings: list[str] = []
        self.messages = 0  # discovery messages handled

    @property
    def subscriptions(self) -> list[str]:
        """Topic filters that cover both discovery topic layouts."""
        return [f"{self.prefix}/+/+/config", f"{self.prefix}/+/+/+/config"]

    def entities(self) -> list[DiscoveredEntity]:
        with self._lock:
            return sorted(self._entities.values(), key=lambda e: (e.name.lower(), e.key))

    def names(self) -> list[str]:
        """Every announced name once, sorted."""
        seen: dict[str, str] = {}
        for entity in self.entities():
            seen.setdefault(entity.name.lower(), entity.name)
        return sorted(seen.values(), key=str.lower)

    def take_warnings(self) -> list[str]:
        with self._lock:
            out, self._warnings = self._warnings, []
        return out

    def _warn(self, message: str) -> None:
        log.warning("Home Assistant discovery: %s", message)
        if len(self._warnings) < _MAX_WARNINGS:
            self._warnings.append(message)

    # -- reconnects: entities removed while the connection was down are not announced again -------------

    def mark_all_unseen(self) -> None:
        """Call on (re)subscribing: retained configs will come again, and what does not come is gone."""
        with self._lock:
            self._unseen = set(self._entities)

    def drop_unseen(self) -> int:
        """Call once the retained configs have arrived: forget entities that were not announced again."""
        with self._lock:
            gone = self._unseen & set(self._entities)
            for key in gone:
                del self._entities[key]
            self._unseen = set()
        return len(gone)

    # -- messages -----------------------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> bool:
        """Apply one discovery message; True when the set of names changed."""
        parts = topic.split("/")
        head = self.prefix.split("/")
        if parts[: len(head)] != head or parts[-1] != "config" or len(parts) - len(head) not in (3, 4):
            return False
        component, object_id = parts[len(head)], parts[-2]
        with self._lock:
            self.messages += 1
            before = {k: e.name for k, e in self._entities.items()}
            if component == "device":
                self._device_config(topic, object_id, payload)
            elif component in self.components or topic in self._entities:
                self._single_config(topic, component, object_id, payload)
            else:
                return False
            after = {k: e.name for k, e in self._entities.items()}
        return before != after

    def _parse(self, topic: str, payload: bytes) -> Mapping[str, Any] | None:
        if len(payload) > MAX_DISCOVERY_PAYLOAD:
            self._warn(f"{topic}: {len(payload)} bytes is too large for a discovery config; ignored")
            return None
        try:
            config = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._warn(f"{topic}: not a JSON config ({exc}); ignored")
            return None
        if not isinstance(config, Mapping):
            self._warn(f"{topic}: the config is not a JSON object; ignored")
            return None
        return config

    def _store(self, entity: DiscoveredEntity) -> None:
        self._unseen.discard(entity.key)
        if entity.key not in self._entities and len(self._entities) >= MAX_ENTITIES:
            self._warn(f"more than {MAX_ENTITIES} entities; {entity.name!r} left out")
            return
        self._entities[entity.key] = entity

    def _single_config(self, topic: str, component: str, object_id: str, payload: bytes) -> None:
        if not payload:
            self._entities.pop(topic, None)
            return
        config = self._parse(topic, payload)
        if config is None:
            self._unseen.discard(topic)  # keep what it was: a broken update is not a removal
            return
        name = entity_name(config, object_id)
        if name is None or component not in self.components:
            self._entities.pop(topic, None)
            return
        self._store(DiscoveredEntity(topic, component, name))

    def _device_config(self, topic: str, object_id: str, payload: bytes) -> None:
        mine = [k for k in self._entities if k.startswith(topic + "#")]
        if not payload:
            for key in mine:
                del self._entities[key]
            return
        config = self._parse(topic, payload)
        if config is None:
            self._unseen.difference_update(mine)
            return
        components = config.get("components", config.get("cmps"))
        if not isinstance(components, Mapping):
            self._warn(f"{topic}: a device config without components; ignored")
            self._unseen.difference_update(mine)
            return
        device_name = _device_name(config)
        keep: set[str] = set()
        for component_id, component in components.items():
            if not isinstance(component, Mapping):
                continue
            platform = component.get("platform", component.get("p"))
            key = f"{topic}#{component_id}"
            removed = set(component) <= {"platform", "p"}
            if removed or platform not in self.components:
                continue
            name = entity_name(component, str(component_id), device_name)
            if name is not None:
                keep.add(key)
                self._store(DiscoveredEntity(key, str(platform), name))
        for key in mine:
            if key not in keep:
                self._entities.pop(key, None)

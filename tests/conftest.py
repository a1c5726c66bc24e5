"""Shared pytest fixtures. Each block is owned by the area that needs it; keep blocks small."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# --- MQTT: a real mosquitto broker on loopback (helpers in tests/mosquitto.py) --------------------------
try:  # tests/ as a package
    from tests.mosquitto import MOSQUITTO, Collector, Mosquitto
except ImportError:  # tests/ without __init__.py: pytest put this directory itself on sys.path
    from mosquitto import MOSQUITTO, Collector, Mosquitto  # type: ignore[no-redef]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running mosquitto on a free 127.0.0.1 port; ``.stop()``, ``.start()``, ``.restart()`` for outages."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mqtt_collector(mosquitto: Mosquitto) -> Iterator[Callable[..., Collector]]:
    """Factory: ``mqtt_collector(["harkd/#"])`` subscribes a plain paho client; closed after the test."""
    made: list[Collector] = []

    def make(topics: list[str], protocol: str = "5") -> Collector:
        collector = Collector(mosquitto, topics, protocol=protocol)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.close()


# --- end MQTT -----------------------------------------------------------------------------------------------

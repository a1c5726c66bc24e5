"""Shared pytest fixtures. Each block is owned by the area that needs it; keep blocks small."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# --- MQTT: a real mosquitto broker on loopback (helpers in tests/mosquitto.py) --------------------------
# tests/mosquitto.py is "tests.mosquitto" if tests/ is a package, else "mosquitto" (pytest then puts
# this directory on sys.path); import it by whichever name applies.
_mqtt_helpers = importlib.import_module(f"{__package__}.mosquitto" if __package__ else "mosquitto")
MOSQUITTO, Collector, Mosquitto = _mqtt_helpers.MOSQUITTO, _mqtt_helpers.Collector, _mqtt_helpers.Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Any]:
    """A running mosquitto (persistence on) on a free 127.0.0.1 port; ``.stop()``/``.start()`` for outages."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path / "mosquitto", persistence=True)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory for further brokers: ``make_mosquitto(listener_options=[...], allow_anonymous=False)``."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    made: list[Any] = []

    def make(**kwargs: Any) -> Any:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(made)}", **kwargs)
        made.append(broker)
        broker.start()
        return broker

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture
def mqtt_collector(mosquitto: Any) -> Iterator[Callable[..., Any]]:
    """Factory: ``mqtt_collector(["harkd/#"])`` subscribes a plain paho client; closed after the test."""
    made: list[Any] = []

    def make(topics: list[str], protocol: str = "5", persistent_session: bool = False) -> Any:
        collector = Collector(mosquitto, topics, protocol=protocol, persistent_session=persistent_session)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.close()


# --- end MQTT -----------------------------------------------------------------------------------------------


# --- Audio: ALSA capture devices backed by files, for real PortAudio (helpers in tests/alsa_fixtures.py) ---
_alsa_helpers = importlib.import_module(f"{__package__}.alsa_fixtures" if __package__ else "alsa_fixtures")


@pytest.fixture
def alsa_devices(tmp_path: Path) -> Any:
    """An ``AlsaDevices`` writing its asound.conf under tmp_path; skips if PortAudio or ALSA is missing."""
    reason = _alsa_helpers.alsa_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    return _alsa_helpers.AlsaDevices(tmp_path / "alsa")


# --- end Audio ----------------------------------------------------------------------------------------------


# --- Recogniser model: the shipped one, or a random-weight stand-in (helpers in tests/recognizer_model.py) --
_model_helpers = importlib.import_module(f"{__package__}.recognizer_model" if __package__ else "recognizer_model")


@pytest.fixture(scope="session")
def recognizer_model() -> tuple[Path, bool]:
    """``(model directory, is_shipped)``: models/recognizer when installed, else a cached random-weight model."""
    try:
        result: tuple[Path, bool] = _model_helpers.model_dir_for_tests()
    except ImportError as exc:
        pytest.skip(f"no shipped model and cannot build a test model without the training extras: {exc}")
    return result


# --- end Recogniser model -----------------------------------------------------------------------------------

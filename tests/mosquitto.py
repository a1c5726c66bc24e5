"""A real mosquitto broker on a free loopback port, in a temporary directory, for tests.

``Mosquitto(tmp_dir)`` writes a config, ``start()`` runs the broker and waits until it accepts
connections, ``stop()`` ends it, ``restart()`` does both on the same port (clients see an outage).
:class:`Collector` is a plain paho subscriber that gathers messages for assertions.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """One mosquitto process bound to 127.0.0.1:``port`` with its files under ``directory``."""

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        persistence: bool = False,
        listener_options: Sequence[str] = (),
        allow_anonymous: bool = True,
    ) -> None:
        """``listener_options``: config lines for the listener (TLS files, ``password_file`` ...)."""
        if MOSQUITTO is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.executable: str = MOSQUITTO
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        lines = [
            "per_listener_settings true",
            f"listener {self.port} {self.host}",
            *listener_options,
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {directory}/",
            f"pid_file {directory}/mosquitto.pid",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # as root, mosquitto would switch to a user that cannot write here
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with self.log.open("ab") as log:
            self._process = subprocess.Popen([self.executable, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not _accepts(self.host, self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self._process.returncode}): {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"mosquitto did not listen on {self.port} within {timeout} s")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # in case it was paused
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int


class Collector:
    """A paho client subscribed to ``topics``; received messages wait in :attr:`messages`.

    With ``persistent_session`` the broker keeps the subscription and queues QoS 1 messages while the
    collector is away (across a broker restart too, when the broker has persistence on), and the
    collector reconnects quickly by itself: messages published during an outage are not missed.
    """

    def __init__(
        self, broker: Mosquitto, topics: list[str], *, protocol: str = "5", persistent_session: bool = False
    ) -> None:
        self.messages: queue.Queue[Received] = queue.Queue()
        self._subscribed = threading.Event()
        v5 = protocol == "5"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"collector-{id(self)}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else not persistent_session,
        )
        self._topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(cast(int, 0.1), cast(int, 0.5))  # paho computes with floats
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600 if persistent_session else 0
            self.client.connect(
                broker.host,
                broker.port,
                keepalive=30,
                clean_start=not persistent_session,
                properties=properties,
            )
        else:
            self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise TimeoutError(f"collector could not subscribe to {topics}")

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe([(t, 1) for t in self._topics])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.messages.put(Received(message.topic, bytes(message.payload), bool(message.retain), message.qos))

    def get(self, timeout: float = 5.0) -> Received:
        """The next message; raises queue.Empty after ``timeout`` seconds."""
        return self.messages.get(timeout=timeout)

    def take(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Exactly ``count`` messages within ``timeout``; fails the test (AssertionError) otherwise."""
        deadline = time.monotonic() + timeout
        got: list[Received] = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            try:
                got.append(self.messages.get(timeout=max(remaining, 0.001)))
            except queue.Empty:
                raise AssertionError(f"expected {count} messages, got {len(got)}: {got}") from None
        return got

    def quiet(self, seconds: float) -> list[Received]:
        """Whatever arrives within ``seconds`` (to check that nothing more comes)."""
        deadline = time.monotonic() + seconds
        got: list[Received] = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                break
        return got

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

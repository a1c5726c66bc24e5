"""The contacts sync's one MQTT connection: it follows Home Assistant discovery and publishes the bias list.

The broker settings are the daemon's (``mqtt:`` section, TLS and credentials included) with the client id
``harkd-contacts-<device_id>``. The bias list goes out retained with QoS 1 on ``<prefix>/<device_id>/bias/set``,
so the daemon gets it whenever it (re)connects.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from contacts_sync.homeassistant import DiscoveryState
from daemon.messages import BiasSet, encode
from daemon.mqtt import MqttError, MqttSettings, Topics, make_client

log = logging.getLogger(__name__)

__all__ = ["LinkError", "SyncLink"]


class LinkError(RuntimeError):
    """The broker could not be reached, refused us, or did not take the message."""


class SyncLink:
    """Connect with :meth:`connect`; paho's network thread then feeds discovery messages to ``discovery``
    and calls ``on_change`` (do not block in it) when the announced names change."""

    def __init__(self, settings: MqttSettings, discovery: DiscoveryState | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        if settings.client_id is None:
            settings = dataclasses.replace(settings, client_id=f"harkd-contacts-{settings.device_id}")
        self.settings = settings
        self.topics = Topics(settings.device_id, settings.prefix)
        self.discovery = discovery
        self._on_change = on_change
        self._connected = threading.Event()
        self._answered = threading.Event()  # the broker answered the first connection attempt
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self.connections = 0  # successful connections so far (paho reconnects by itself)
        self._last_message = time.monotonic()
        self._lock = threading.Lock()
        self._client = self._make_client()

    def _make_client(self) -> paho.Client:
        try:
            client = make_client(self.settings, self.settings.client_id or "", f"{__name__}.paho")
        except MqttError as exc:
            raise LinkError(str(exc)) from exc
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # -- connection -----------------------------------------------------------------------------------

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect (and subscribe to discovery); :class:`LinkError` when that fails within ``timeout_s``."""
        s = self.settings
        try:
            self._client.connect(s.host, s.port, s.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise LinkError(f"cannot reach the MQTT broker at {s.host}:{s.port}: {exc}") from None
        self._client.loop_start()
        if not self._answered.wait(timeout_s) or self._refused:
            self.close()
            raise LinkError(self._refused or f"the MQTT broker at {s.host}:{s.port} did not answer in {timeout_s:g} s")
        if self.discovery is not None and not self._subscribed.wait(timeout_s):
            self.close()
            raise LinkError("the MQTT broker did not confirm the discovery subscription")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refused = f"the MQTT broker refused the connection: {reason}"
            log.error("%s", self._refused)
            self._answered.set()
            client.disconnect()
            return
        log.info("MQTT: connected to %s:%d", self.settings.host, self.settings.port)
        self.connections += 1
        if self.discovery is not None:
            self.discovery.mark_all_unseen()
            self._subscribed.clear()
            client.subscribe([(t, 1) for t in self.discovery.subscriptions])
        self._connected.set()
        self._answered.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        log.info("MQTT: disconnected (%s)", reason)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        refused = [str(r) for r in reasons if getattr(r, "is_failure", False)]
        if refused:
            log.error("MQTT: the broker refused the discovery subscription: %s", ", ".join(refused))
        with self._lock:
            self._last_message = time.monotonic()
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self.discovery is None:
            return
        with self._lock:
            self._last_message = time.monotonic()
        try:
            changed = self.discovery.handle(message.topic, bytes(message.payload))
        except Exception:  # a bug must not kill paho's thread; it is logged with its traceback
            log.exception("Home Assistant discovery: cannot handle %s", message.topic)
            return
        if changed and self._on_change is not None:
            self._on_change()

    # -- use ------------------------------------------------------------------------------------------

    def wait_settled(self, quiet_s: float = 0.5, max_s: float = 5.0) -> None:
        """Wait until the retained discovery configs have arrived: no message for ``quiet_s`` after the
        subscription (at most ``max_s``); then forget entities that were not announced again."""
        deadline = time.monotonic() + max_s
        self._subscribed.wait(max_s)
        while time.monotonic() < deadline:
            with self._lock:
                idle = time.monotonic() - self._last_message
            if idle >= quiet_s:
                break
            time.sleep(min(quiet_s - idle, max(0.0, deadline - time.monotonic())) + 0.01)
        if self.discovery is not None:
            gone = self.discovery.drop_unseen()
            if gone:
                log.info("Home Assistant discovery: %d entities were removed while away", gone)

    def publish_bias(self, document: BiasSet, timeout_s: float = 10.0) -> None:
        """Publish ``document`` retained (QoS 1) and wait for the broker to take it."""
        if not self._connected.wait(timeout_s):
            raise LinkError("not connected to the MQTT broker")
        info = self._client.publish(self.topics.bias_set, encode(document), qos=1, retain=True)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise LinkError(f"publishing the bias list failed: {exc}") from None
        if not info.is_published():
            raise LinkError(f"the broker did not acknowledge the bias list within {timeout_s:g} s")
        log.info("MQTT: bias list %s published (retained) on %s", document.version, self.topics.bias_set)

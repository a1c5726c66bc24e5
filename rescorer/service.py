"""The rescorer's MQTT side: lattices in on ``<prefix>/+/lattice``, results out on ``<prefix>/<device>/result``.

One paho client (the daemon's ``mqtt:`` settings: host, TLS, credentials, back-off; its own client id
``harkd-rescorer-<device_id>``) subscribes with QoS 1 to every device's lattices. For each message:

* an empty payload (a cleared retained message) is skipped;
* a payload that is not a valid ``harkd.lattice/1`` document, or whose ``device_id`` is not the device of
  its topic, is logged with the reason and skipped (counted as rejected);
* a speculative lattice is skipped: the final one follows (a ``reset`` needs nothing either, so the
  rescorer does not subscribe to it);
* a final lattice is rescored (:class:`~rescorer.rescore.Rescorer`) and a ``harkd.result/1`` message is
  published on the device's ``result`` topic with the configured QoS (1 by default).

Rescoring an n-best list takes microseconds, so it runs on paho's network thread; a failure is logged and
never reaches paho. A broker that is down or goes away is retried with exponential back-off from
``reconnect_min_s`` to ``reconnect_max_s`` (paho's own loop); with MQTT 5 the session outlives a dropped
connection by ``session_expiry_s``, so QoS 1 lattices sent meanwhile are delivered on reconnect. Delivery is
at least once: a lattice delivered twice is answered twice with the same result.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from daemon.lattice import Lattice, LatticeError
from daemon.messages import PayloadError, encode
from daemon.mqtt import MqttSettings, Topics, connect_in_background, make_client
from rescorer.rescore import Rescorer

__all__ = ["DEFAULT_SESSION_EXPIRY_S", "RescorerService", "ServiceStats", "lattice_subscription"]

log = logging.getLogger(__name__)

DEFAULT_SESSION_EXPIRY_S = 600  # seconds the broker keeps our subscription and queued lattices while we are away


def lattice_subscription(prefix: str) -> str:
    """The topic filter for every device's lattices: ``<prefix>/+/lattice``."""
    return f"{prefix.rstrip('/')}/+/lattice"


@dataclass(frozen=True)
class ServiceStats:
    connected: bool
    connections: int  # successful connections since start
    received: int  # lattice messages received
    answered: int  # results published
    speculative: int  # speculative lattices skipped
    rejected: int  # malformed messages skipped
    failed: int  # rescoring or publishing failures


class RescorerService:
    """Start with :meth:`start`, stop with :meth:`stop`; :meth:`handle` is the per-message logic."""

    def __init__(self, settings: MqttSettings, rescorer: Rescorer, *, client_id: str | None = None,
                 session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S) -> None:
        self.settings = settings
        self.rescorer = rescorer
        self.subscription = lattice_subscription(settings.prefix)
        self.client_id = client_id or f"harkd-rescorer-{settings.device_id}"
        self.session_expiry_s = session_expiry_s
        self._lock = threading.Condition()
        self._stats = ServiceStats(False, 0, 0, 0, 0, 0, 0)
        self._subscribed = False
        self._started = False
        self._client = make_client(settings, self.client_id, f"{__name__}.paho")
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.message_callback_add(self.subscription, self._on_lattice)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho retries while the broker is away."""
        if self._started:
            raise RuntimeError("RescorerService.start() called twice")
        s = self.settings
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry_s
        connect_in_background(self._client, s, clean_start=MQTT_CLEAN_START_FIRST_ONLY, properties=properties)
        self._started = True
        log.info("rescorer: connecting to %s:%d as %s, subscribing to %s", s.host, s.port, self.client_id,
                 self.subscription)

    def stop(self) -> None:
        if not self._started:
            return
        self._client.disconnect()
        self._client.loop_stop()
        self._started = False
        with self._lock:
            self._subscribed = False
            self._count(connected=False)

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until connected and subscribed (True) or ``timeout`` seconds pass (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._subscribed, timeout)

    def stats(self) -> ServiceStats:
        with self._lock:
            return self._stats

    def _count(self, **changes: Any) -> None:
        """Update the counters (``field=1`` adds one; ``connected`` is set). Call with the lock held."""
        values = {k: (v if k == "connected" else getattr(self._stats, k) + v) for k, v in changes.items()}
        self._stats = dataclasses.replace(self._stats, **values)
        self._lock.notify_all()

    # -- messages ----------------------------------------------------------------------------------------

    def device_of(self, topic: str) -> str | None:
        """The ``<device_id>`` level of ``<prefix>/<device_id>/lattice``; None for any other topic."""
        head = self.settings.prefix.rstrip("/") + "/"
        if not topic.startswith(head) or not topic.endswith("/lattice"):
            return None
        device = topic[len(head) : -len("/lattice")]
        return device if device and "/" not in device else None

    def handle(self, topic: str, payload: bytes) -> None:
        """Rescore one lattice message and publish the result; logs and counts whatever goes wrong."""
        with self._lock:
            self._count(received=1)
        if not payload:
            log.info("rescorer: empty message on %s (a cleared retained message); skipped", topic)
            return
        device = self.device_of(topic)
        try:
            if device is None:
                raise LatticeError(f"the topic is not {self.subscription}")
            lattice = Lattice.from_json(payload)
            if lattice.device_id != device:
                raise LatticeError(f"device_id {lattice.device_id!r} is not the topic's device {device!r}")
        except LatticeError as exc:
            with self._lock:
                self._count(rejected=1)
            log.warning("rescorer: skipped a malformed lattice on %s: %s", topic, exc)
            return
        if lattice.kind != "final":
            with self._lock:
                self._count(speculative=1)
            log.debug("rescorer: speculative lattice %s #%d skipped", lattice.utterance_id, lattice.seq)
            return
        try:
            result = self.rescorer.result_for(lattice)
            if result is None:  # not final; handled above
                return
            info = self._client.publish(Topics(lattice.device_id, self.settings.prefix).result, encode(result),
                                        qos=self.settings.qos)
        except (PayloadError, ValueError, RuntimeError) as exc:
            with self._lock:
                self._count(failed=1)
            log.error("rescorer: cannot answer lattice %s #%d from %s: %s", lattice.utterance_id, lattice.seq,
                      lattice.device_id, exc)
            return
        with self._lock:
            self._count(answered=1)
        best = lattice.best
        log.info("rescorer: %s %s #%d: %r (score %.3f; device's first %r)%s", lattice.device_id,
                 lattice.utterance_id, lattice.seq, result.text, result.score or 0.0, best.text if best else "",
                 "" if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else f"; queued until reconnected ({info.rc})")

    # -- paho callbacks (network thread) -------------------------------------------------------------------

    def _on_lattice(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            self.handle(message.topic, bytes(message.payload))
        except Exception:  # never let a bug kill paho's thread; logged with its traceback
            with self._lock:
                self._count(failed=1)
            log.exception("rescorer: handling a message on %s failed", message.topic)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("rescorer: broker %s:%d refused the connection: %s; retrying", self.settings.host,
                      self.settings.port, reason)
            return
        client.subscribe(self.subscription, qos=1)
        with self._lock:
            self._count(connected=True, connections=1)
        log.info("rescorer: connected to %s:%d", self.settings.host, self.settings.port)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        log.warning("rescorer: cannot connect to %s:%d; retrying", self.settings.host, self.settings.port)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        with self._lock:
            was_connected = self._stats.connected
            self._subscribed = False
            self._count(connected=False)
        if was_connected:
            (log.warning if reason.is_failure else log.info)("rescorer: disconnected (%s)", reason)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Any) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("rescorer: the broker refused the subscription to %s: %s", self.subscription,
                      ", ".join(refused))
            return
        with self._lock:
            self._subscribed = True
            self._lock.notify_all()

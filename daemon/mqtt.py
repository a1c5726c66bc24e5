"""MQTT: the :class:`Publisher` (paho-mqtt 2.x) that sends lattices and events from a persistent outbox.

Topics (:class:`Topics`, prefix ``harkd`` by default): ``<prefix>/<device_id>/`` + ``status``, ``wake``,
``lattice``, ``reset``, ``result``, ``bias/set``, ``media/duck``, ``metrics``. Payload schemas are in
``daemon/schemas/``.

How it behaves:

* paho's network thread runs the connection (``loop_start``); a broker that is down or goes away is
  retried with exponential back-off from ``reconnect_min_s`` to ``reconnect_max_s``. The daemon keeps
  running; :meth:`Publisher.status` says whether it is connected and how much is waiting.
* Durable messages (lattices, wake, reset, result) go through the :class:`~daemon.outbox.Outbox`: they are
  appended (never blocking the pipeline), sent in order by the publisher's own outbox thread once
  connected (QoS 1 unless configured otherwise), and removed only when the broker acknowledges them
  (PUBACK; for QoS 0, once written to the socket). Across a reconnect paho re-sends what it had in
  flight and nothing new is sent until that is acknowledged, so order holds. Across a restart everything
  not acknowledged is sent again: delivery is at least once, and each lattice carries its utterance id,
  kind and seq so subscribers can drop duplicates.
* Messages that are useless late (metrics, media/duck, Hermes) are sent only while connected and
  otherwise dropped and counted.
* Status: the Last Will is a retained ``offline`` status; on every connection a retained ``online``
  status with model versions and uptime is published; :meth:`Publisher.stop` publishes ``offline`` itself
  (a clean disconnect does not fire the Will).
* Inbound ``bias/set`` and ``result`` are validated against their schemas and handed to callbacks, which
  run on paho's network thread (hand the message off; do not block). Malformed payloads are logged with
  the reason and ignored; a failing callback is logged; nothing propagates into paho.
* Optional Hermes (Rhasspy/Snips) compatibility: ``hermes/hotword/<wakeword_id>/detected`` on wake and
  ``hermes/asr/textCaptured`` on each final lattice.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import queue
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from daemon.lattice import Lattice
from daemon.messages import (
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
    encode_json,
)
from daemon.outbox import Outbox, OutboxMessage

if TYPE_CHECKING:
    from daemon.config import Config

__all__ = [
    "DEFAULT_PREFIX",
    "HERMES_ASR_TEXT_CAPTURED",
    "MqttError",
    "MqttSettings",
    "Publisher",
    "PublisherStatus",
    "Topics",
    "connect_in_background",
    "hermes_hotword_detected",
    "make_client",
    "settings_from_config",
]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "harkd"
HERMES_ASR_TEXT_CAPTURED = "hermes/asr/textCaptured"

_RESYNC_TIMEOUT_S = 30.0  # after a reconnect, how long to wait for paho's re-sends before going on
_PUMP_TICK_S = 0.5  # the outbox thread wakes at least this often (seconds)


class MqttError(ValueError):
    """MQTT settings that cannot work (bad topic parts, TLS files that do not load)."""


def _check_topic_part(what: str, value: str, *, allow_slash: bool) -> None:
    bad = {"+", "#", "\0"} | (set() if allow_slash else {"/"})
    if not value or any(c in value for c in bad) or value != value.strip() or "//" in value:
        allowed = "" if allow_slash else ", '/'"
        raise MqttError(f"MQTT {what} {value!r} must be non-empty without '+', '#'{allowed} or spaces at the ends")


def _check_publish_topic(topic: str) -> None:
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"cannot publish on {topic!r}: a topic is non-empty, without '+', '#' or NUL")


def hermes_hotword_detected(wakeword_id: str) -> str:
    """The Hermes topic on which a wake word detection is announced."""
    _check_topic_part("Hermes wakeword id", wakeword_id, allow_slash=False)
    return f"hermes/hotword/{wakeword_id}/detected"


@dataclass(frozen=True)
class Topics:
    """The device's topics: ``<prefix>/<device_id>/<name>``."""

    device_id: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        _check_topic_part("device id", self.device_id, allow_slash=False)
        _check_topic_part("topic prefix", self.prefix, allow_slash=True)

    def topic(self, name: str) -> str:
        return f"{self.prefix.rstrip('/')}/{self.device_id}/{name}"

    @property
    def status(self) -> str:
        return self.topic("status")

    @property
    def wake(self) -> str:
        return self.topic("wake")

    @property
    def lattice(self) -> str:
        return self.topic("lattice")

    @property
    def reset(self) -> str:
        return self.topic("reset")

    @property
    def result(self) -> str:
        return self.topic("result")

    @property
    def bias_set(self) -> str:
        return self.topic("bias/set")

    @property
    def media_duck(self) -> str:
        return self.topic("media/duck")

    @property
    def metrics(self) -> str:
        return self.topic("metrics")

    def all(self) -> dict[str, str]:
        """Every topic by name (as in DESIGN.md)."""
        names = ("status", "wake", "lattice", "reset", "result", "bias/set", "media/duck", "metrics")
        return {name: self.topic(name) for name in names}


@dataclass(frozen=True)
class MqttSettings:
    """Broker connection settings. The password is never shown in ``repr``."""

    device_id: str
    host: str = "localhost"
    port: int = 1883
    prefix: str = DEFAULT_PREFIX
    protocol: Literal["5", "3.1.1"] = "5"  # MQTT version
    client_id: str | None = None  # default "harkd-<device_id>"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_certs: str | None = None  # CA bundle path; None: the system's
    certfile: str | None = None  # client certificate (mutual TLS)
    keyfile: str | None = None
    tls_insecure: bool = False  # do not check the broker's host name (testing only)
    keepalive_s: int = 30  # seconds
    reconnect_min_s: float = 1.0  # first reconnect delay, seconds; doubles up to reconnect_max_s
    reconnect_max_s: float = 60.0
    max_inflight: int = 10  # outbox messages sent but not yet acknowledged
    qos: int = 1  # QoS of lattices, wake, reset and result (metrics are always 0)
    hermes: bool = False  # also publish Hermes hotword/ASR messages
    hermes_wakeword_id: str = "default"

    def __post_init__(self) -> None:
        if self.protocol not in ("5", "3.1.1"):
            raise MqttError(f"MQTT protocol must be '5' or '3.1.1', not {self.protocol!r}")
        if not 0 < self.port < 65536:
            raise MqttError(f"MQTT port must be 1..65535, not {self.port}")
        if (self.certfile or self.keyfile or self.ca_certs or self.tls_insecure) and not self.tls:
            raise MqttError("MQTT ca_certs/certfile/keyfile/tls_insecure are set but tls is off")
        if self.keyfile and not self.certfile:
            raise MqttError("MQTT keyfile is set without certfile")
        if self.password is not None and self.username is None:
            raise MqttError("MQTT password is set without username")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise MqttError("MQTT reconnect delays must satisfy 0 < reconnect_min_s <= reconnect_max_s")
        if self.qos not in (0, 1, 2):
            raise MqttError(f"MQTT qos must be 0, 1 or 2, not {self.qos!r}")
        if self.max_inflight < 1:
            raise MqttError(f"MQTT max_inflight must be at least 1, not {self.max_inflight}")
        Topics(self.device_id, self.prefix)  # validates both
        hermes_hotword_detected(self.hermes_wakeword_id)


def settings_from_config(config: Config) -> MqttSettings:
    """The publisher's settings from the daemon configuration (``mqtt:`` section and ``device_id``)."""
    m = config.mqtt

    def path(p: object) -> str | None:
        return None if p is None else str(p)

    return MqttSettings(
        device_id=config.device_id,
        host=m.host,
        port=m.port,
        prefix=m.prefix,
        protocol=m.protocol,
        client_id=m.client_id,
        username=m.username,
        password=m.password,
        tls=m.tls.enabled,
        ca_certs=path(m.tls.ca),
        certfile=path(m.tls.cert),
        keyfile=path(m.tls.key),
        tls_insecure=m.tls.insecure,
        keepalive_s=m.keepalive_s,
        reconnect_min_s=m.reconnect_min_s,
        reconnect_max_s=m.reconnect_max_s,
        max_inflight=m.max_inflight,
        qos=m.qos,
        hermes=m.hermes,
        hermes_wakeword_id=m.hermes_wakeword_id,
    )


def make_client(settings: MqttSettings, client_id: str, logger: str,
                will: tuple[str, bytes] | None = None) -> paho.Client:
    """A paho client with the protocol, credentials, TLS and reconnect back-off of ``settings`` (not yet
    connected; callbacks are the caller's). ``will``: (topic, payload) published retained, QoS 1, when the
    connection is lost. :class:`MqttError` when the TLS files cannot be loaded."""
    v5 = settings.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else True,
    )
    client.enable_logger(logging.getLogger(logger))
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        try:
            client.tls_set(ca_certs=settings.ca_certs, certfile=settings.certfile, keyfile=settings.keyfile)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise MqttError(f"MQTT TLS: cannot load the CA/certificate/key files: {exc}") from exc
        client.tls_insecure_set(settings.tls_insecure)
    # paho annotates the delays as int but computes with them as numbers; fractions work.
    client.reconnect_delay_set(cast(int, settings.reconnect_min_s), cast(int, settings.reconnect_max_s))
    return client


def connect_in_background(client: paho.Client, settings: MqttSettings, *, clean_start: bool | Literal[3] = True,
                          properties: Properties | None = None) -> None:
    """Start paho's network thread on a connection to the broker of ``settings``; paho retries (with the
    client's back-off) while the broker is away. ``clean_start`` (True, False or paho's
    ``MQTT_CLEAN_START_FIRST_ONLY``) and ``properties`` apply to MQTT 5 only."""
    if settings.protocol == "5":
        client.connect_async(settings.host, settings.port, settings.keepalive_s, clean_start=clean_start,
                             properties=properties)
    else:
        client.connect_async(settings.host, settings.port, settings.keepalive_s)
    client.loop_start()


@dataclass(frozen=True)
class PublisherStatus:
    connected: bool
    connections: int  # successful connections since start
    last_error: str | None  # why the last connection failed or dropped
    pending: int  # messages in the outbox (not yet acknowledged)
    in_flight: int  # of those, sent and waiting for the broker's acknowledgement
    dropped: int  # messages dropped because the outbox was full, ever
    rejected: int  # messages the broker refused (MQTT 5 PUBACK with an error code)
    not_sent: int  # non-durable messages dropped because the broker was away
    inbound_rejected: int  # malformed inbound messages ignored


@dataclass(frozen=True)
class _Event:
    kind: Literal["connected", "disconnected", "ack", "wake", "stop"]
    mid: int = 0
    reason: ReasonCode | None = None


def _harkd_version() -> str | None:
    try:
        return importlib.metadata.version("harkd")
    except importlib.metadata.PackageNotFoundError:
        return None


def _posterior_of_first(scores: list[float]) -> float:
    """exp(scores[0]) / sum(exp(scores)): how much of the n-best's probability the first entry holds."""
    if not scores:
        return 0.0
    top = max(scores)
    log_total = top + math.log(sum(math.exp(s - top) for s in scores))
    return math.exp(scores[0] - log_total)


class Publisher:
    """Publishes the device's messages; see the module docstring.

    ``on_bias_set(BiasSet)`` and ``on_result(Result)`` are called on paho's network thread.
    ``started_at`` is when the daemon started on the ``monotonic`` clock (default: now), for the uptime in the
    status; ``monotonic`` is also used for the re-send timeout. The outbox stays the caller's to close.
    """

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        *,
        models: Mapping[str, str] | None = None,
        on_bias_set: Callable[[BiasSet], None] | None = None,
        on_result: Callable[[Result], None] | None = None,
        version: str | None = None,
        started_at: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.device_id, settings.prefix)
        self.outbox = outbox
        self._models = dict(models or {})
        self._on_bias_set = on_bias_set
        self._on_result = on_result
        self._version = version if version is not None else _harkd_version()
        self._monotonic = monotonic
        self._started_at = monotonic() if started_at is None else started_at

        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._changed = threading.Condition()  # guards the fields below; notified when they change
        self._connected = False
        self._subscribed = False  # the inbound subscriptions of this connection are in place
        self._connections = 0
        self._last_error: str | None = None
        self._in_flight = 0
        self._rejected = 0
        self._not_sent = 0
        self._inbound_rejected = 0

        self._thread: threading.Thread | None = None
        self._client = self._make_client()

    # -- set-up ---------------------------------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        s = self.settings
        offline = Status(s.device_id, "offline", self._version, self._models)
        client = make_client(s, s.client_id or f"harkd-{s.device_id}", f"{__name__}.paho",
                             will=(self.topics.status, encode(offline)))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.message_callback_add(self.topics.bias_set, self._on_bias_message)
        client.message_callback_add(self.topics.result, self._on_result_message)
        return client

    def start(self) -> None:
        """Connect in the background (retrying while the broker is away) and start sending the outbox."""
        if self._thread is not None:
            raise RuntimeError("Publisher.start() called twice")
        s = self.settings
        connect_in_background(self._client, s)
        self._thread = threading.Thread(target=self._pump, name="harkd-mqtt-outbox", daemon=True)
        self._thread.start()
        logger.info("MQTT: connecting to %s:%d as %s", s.host, s.port, self.topics.topic("")[:-1])

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the ``offline`` status if connected, disconnect and stop both threads.

        Messages not yet acknowledged stay in the outbox for the next start.
        """
        if self._thread is None:
            return
        self._events.put(_Event("stop"))
        self._thread.join(timeout)
        if self._client.is_connected():
            offline = Status(self.settings.device_id, "offline", self._version, self._models, self.uptime_s)
            info = self._client.publish(self.topics.status, encode(offline), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                logger.warning("MQTT: could not publish the offline status: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        self._thread = None
        with self._changed:
            self._connected = False
            self._changed.notify_all()

    # -- state --------------------------------------------------------------------------------------------

    @property
    def uptime_s(self) -> float:
        return max(0.0, self._monotonic() - self._started_at)

    @property
    def connected(self) -> bool:
        with self._changed:
            return self._connected

    def status(self) -> PublisherStatus:
        pending, dropped = len(self.outbox), self.outbox.dropped
        with self._changed:
            return PublisherStatus(
                connected=self._connected,
                connections=self._connections,
                last_error=self._last_error,
                pending=pending,
                in_flight=self._in_flight,
                dropped=dropped,
                rejected=self._rejected,
                not_sent=self._not_sent,
                inbound_rejected=self._inbound_rejected,
            )

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected and subscribed to the inbound topics (True) or ``timeout`` passes (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._connected and self._subscribed, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until the outbox is empty and nothing is in flight (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self._in_flight == 0 and len(self.outbox) == 0:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, _PUMP_TICK_S))

    def set_models(self, models: Mapping[str, str]) -> None:
        """Model versions changed (an update was applied): republish the ``online`` status."""
        self._models = dict(models)
        if self.connected:
            self._publish_status_online()

    # -- publishing ---------------------------------------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, droppable: bool = False
    ) -> int:
        """Queue any message in the outbox (sent in order, kept until acknowledged); returns its outbox id.

        ``droppable`` messages are the first to go when the outbox is full.
        """
        _check_publish_topic(topic)
        message_id = self.outbox.append(topic, payload, qos=qos, retain=retain, droppable=droppable)
        self._events.put(_Event("wake"))
        return message_id

    def send_now(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> bool:
        """Send a message only if connected, bypassing the outbox; False (and counted) if it was not sent."""
        _check_publish_topic(topic)
        return self._send_now(topic, payload, qos=qos, retain=retain)

    def publish_lattice(self, lattice: Lattice) -> int:
        """Queue a lattice (droppable when the outbox is full); returns its outbox id.

        With Hermes on, a final lattice also sends ``hermes/asr/textCaptured`` (best text, its share of the
        n-best probability as ``likelihood``, duration as ``seconds``).
        """
        self._check_device(lattice.device_id, "lattice")
        message_id = self.publish(self.topics.lattice, lattice.to_json(), qos=self.settings.qos, droppable=True)
        if self.settings.hermes and lattice.kind == "final":
            best = lattice.best
            captured = {
                "text": best.text if best else "",
                "likelihood": _posterior_of_first([e.score for e in lattice.nbest]),
                "seconds": lattice.duration,
                "siteId": self.settings.device_id,
                "sessionId": lattice.utterance_id,
                "wakewordId": self.settings.hermes_wakeword_id,
            }
            self._send_now(HERMES_ASR_TEXT_CAPTURED, encode_json(captured), qos=0)
        return message_id

    def publish_wake(self, wake: Wake) -> int:
        self._check_device(wake.device_id, "wake")
        message_id = self._queue(self.topics.wake, encode(wake))
        if self.settings.hermes:
            detected = {
                "modelId": wake.phrase,
                "modelVersion": self._models.get("wake", ""),
                "modelType": "personal",
                "currentSensitivity": wake.score,
                "siteId": self.settings.device_id,
                "sessionId": wake.utterance_id,
            }
            topic = hermes_hotword_detected(self.settings.hermes_wakeword_id)
            self._send_now(topic, encode_json(detected), qos=0)
        return message_id

    def publish_reset(self, reset: Reset) -> int:
        self._check_device(reset.device_id, "reset")
        return self._queue(self.topics.reset, encode(reset))

    def publish_result(self, result: Result) -> int:
        return self._queue(self.topics.result, encode(result))

    def publish_media_duck(self, duck: MediaDuck) -> bool:
        """Sent only while connected (a late duck request is worse than none); False if not sent."""
        self._check_device(duck.device_id, "media/duck")
        return self._send_now(self.topics.media_duck, encode(duck), qos=1)

    def publish_metrics(self, metrics: Metrics) -> bool:
        """QoS 0, only while connected; False if not sent."""
        self._check_device(metrics.device_id, "metrics")
        return self._send_now(self.topics.metrics, encode(metrics), qos=0)

    def _queue(self, topic: str, payload: bytes) -> int:
        return self.publish(topic, payload, qos=self.settings.qos, droppable=False)

    def _check_device(self, device_id: str, what: str) -> None:
        if device_id != self.settings.device_id:
            raise ValueError(
                f"{what} message for device {device_id!r} given to the publisher of {self.settings.device_id!r}"
            )

    def _send_now(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> bool:
        if self._client.is_connected():
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                return True
        with self._changed:
            self._not_sent += 1
        logger.debug("MQTT: broker away, %s message not sent", topic)
        return False

    def _publish_status_online(self) -> None:
        online = Status(self.settings.device_id, "online", self._version, self._models, round(self.uptime_s, 3))
        self._client.publish(self.topics.status, encode(online), qos=1, retain=True)

    # -- the outbox thread ------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Owns the send side: hands outbox messages to paho in order and removes them when acknowledged."""
        in_flight: dict[int, OutboxMessage] = {}  # paho message id -> outbox message
        retry: list[OutboxMessage] = []  # QoS 0 messages lost with a connection, to send again first
        last_handed = 0  # highest outbox id handed to paho
        connected = False
        resync_deadline: float | None = None
        while True:
            try:
                events = [self._events.get(timeout=_PUMP_TICK_S)]
            except queue.Empty:
                events = []
            while True:
                try:
                    events.append(self._events.get_nowait())
                except queue.Empty:
                    break
            for event in events:
                if event.kind == "stop":
                    return
                if event.kind == "connected":
                    connected = True
                    self._publish_status_online()
                    if any(m.qos > 0 for m in in_flight.values()):
                        # paho re-sends what it held; send nothing new until that is acknowledged
                        resync_deadline = self._monotonic() + _RESYNC_TIMEOUT_S
                elif event.kind == "disconnected":
                    connected = False
                    lost = [mid for mid, m in in_flight.items() if m.qos == 0]
                    retry = sorted([in_flight.pop(mid) for mid in lost] + retry, key=lambda m: m.id)
                elif event.kind == "ack":
                    self._acknowledged(in_flight, event)
            if connected and resync_deadline is not None:
                if not any(m.qos > 0 for m in in_flight.values()):
                    resync_deadline = None
                elif self._monotonic() > resync_deadline:
                    logger.warning("MQTT: %d re-sent message(s) still unacknowledged; going on", len(in_flight))
                    resync_deadline = None
            if connected and resync_deadline is None:
                try:
                    last_handed = self._fill(in_flight, retry, last_handed)
                except Exception:  # never let the send side die; the next event retries
                    logger.exception("MQTT: sending from the outbox failed")
            with self._changed:
                self._in_flight = len(in_flight)
                self._changed.notify_all()

    def _acknowledged(self, in_flight: dict[int, OutboxMessage], event: _Event) -> None:
        message = in_flight.pop(event.mid, None)
        if message is None:
            return  # a status or non-durable message
        self.outbox.remove(message.id)
        if event.reason is not None and event.reason.is_failure:
            with self._changed:
                self._rejected += 1
            logger.error("MQTT: broker refused message %d on %s (%s); dropped", message.id, message.topic, event.reason)

    def _fill(self, in_flight: dict[int, OutboxMessage], retry: list[OutboxMessage], last_handed: int) -> int:
        """Hand messages to paho until the window is full; returns the new ``last_handed``."""
        room = self.settings.max_inflight - len(in_flight)
        if room <= 0:
            return last_handed
        queued = retry[:room]
        del retry[:room]
        if len(queued) < room:
            queued += self.outbox.pending(after_id=last_handed, limit=room - len(queued))
        for i, message in enumerate(queued):
            try:
                info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
            except ValueError as exc:  # paho refuses the topic or payload: it can never be sent
                self.outbox.remove(message.id)
                last_handed = max(last_handed, message.id)
                with self._changed:
                    self._rejected += 1
                logger.error("MQTT: cannot send message %d on %r (%s); dropped", message.id, message.topic, exc)
                continue
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                message.qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN  # paho keeps it and re-sends
            ):
                in_flight[info.mid] = message
                last_handed = max(last_handed, message.id)
                continue
            # Not taken (connection just dropped): QoS 0 ones go back to the retry list, the others stay
            # in the outbox after last_handed; everything is tried again on the next connection.
            retry[:0] = [m for m in queued[i:] if m.qos == 0 and m.id <= last_handed]
            logger.debug("MQTT: paho did not take message %d (%s); will retry", message.id, info.rc)
            break
        return last_handed

    # -- paho callbacks (network thread) ------------------------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: paho.Properties | None,
    ) -> None:
        if reason.is_failure:
            logger.error(
                "MQTT: broker %s:%d refused the connection: %s",
                self.settings.host,
                self.settings.port,
                reason,
            )
            with self._changed:
                self._last_error = f"connection refused: {reason}"
            return
        if self.settings.protocol == "5":
            options = SubscribeOptions(qos=1, noLocal=True)
            client.subscribe([(self.topics.bias_set, options), (self.topics.result, options)])
        else:
            client.subscribe([(self.topics.bias_set, 1), (self.topics.result, 1)])
        with self._changed:
            self._connected = True
            self._connections += 1
            self._changed.notify_all()
        logger.info("MQTT: connected to %s:%d", self.settings.host, self.settings.port)
        self._events.put(_Event("connected"))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        with self._changed:
            self._last_error = f"cannot connect to {self.settings.host}:{self.settings.port}"
        logger.warning("MQTT: cannot connect to %s:%d; retrying", self.settings.host, self.settings.port)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: paho.Properties | None,
    ) -> None:
        was_connected = False
        with self._changed:
            was_connected, self._connected, self._subscribed = self._connected, False, False
            if reason.is_failure and was_connected:  # else on_connect/on_connect_fail said why already
                self._last_error = f"disconnected: {reason}"
            self._changed.notify_all()
        if was_connected:
            log = logger.warning if reason.is_failure else logger.info
            log("MQTT: disconnected from %s:%d (%s)", self.settings.host, self.settings.port, reason)
            self._events.put(_Event("disconnected"))

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: paho.Properties | None,
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            logger.error(
                "MQTT: broker refused the subscription to %s / %s: %s",
                self.topics.bias_set,
                self.topics.result,
                ", ".join(refused),
            )
        with self._changed:
            self._subscribed = True
            self._changed.notify_all()

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: paho.Properties | None,
    ) -> None:
        # Runs under paho's internal locks: only queue the acknowledgement for the outbox thread.
        self._events.put(_Event("ack", mid, reason))

    def _on_bias_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._inbound(message, BiasSet, self._on_bias_set)

    def _on_result_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._inbound(message, Result, self._on_result)

    def _inbound(self, message: paho.MQTTMessage, cls: type[Any], callback: Callable[[Any], None] | None) -> None:
        if not message.payload:
            logger.info("MQTT: empty message on %s (a cleared retained message); ignored", message.topic)
            return
        try:
            parsed = decode(cls, bytes(message.payload))
        except PayloadError as exc:
            with self._changed:
                self._inbound_rejected += 1
            logger.warning("MQTT: ignored malformed message on %s: %s", message.topic, exc)
            return
        if callback is None:
            return
        try:
            callback(parsed)
        except Exception:
            logger.exception("MQTT: the handler for %s failed", message.topic)

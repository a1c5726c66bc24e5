"""The daemon's lifecycle: start the parts in order, run until told to stop, stop them in reverse.

Start-up order, each step only once the one before has worked:

1. models: the recogniser (its card and file hashes checked), the trigger (``wake.engine``), and the
   bias list from ``bias.file``, or the last one received (``<state_dir>/bias.json``), which biases every
   stream through :class:`daemon.bias.BiasGraphCache` (lists arriving on ``bias/set`` apply from the next
   utterance);
2. audio: the source is opened and started. A microphone that is missing is not an error: the source
   keeps retrying in the background (``systemctl status`` says so) and harkd runs without audio until it
   appears. An audio file that cannot be read is an error;
3. MQTT: the persistent outbox is opened and the publisher connects in the background. A broker that is
   away is not an error either: messages wait in the outbox;
4. the pipeline's worker thread;
5. ``READY=1`` to systemd. Before that, start-up waits up to :data:`READY_WAIT_S` for the microphone to
   deliver and the broker to accept the connection, so that READY means "working" whenever it can; past
   that it goes on and ``STATUS=`` says what is still missing (a service that never reports ready would be
   killed and restarted by systemd, which does not bring a microphone or a broker back).

Whatever was started is stopped in reverse order in a ``finally`` (an :class:`contextlib.ExitStack`): the
pipeline publishes the utterance in progress, the publisher gets up to :data:`DRAIN_WAIT_S` to deliver what
is queued (the rest stays in the outbox for the next start), the outbox is closed, the audio stopped.

Exit status: 0 after SIGTERM/SIGINT or when an audio file has been played to the end; 1 for a bad
configuration (``harkd run`` reports it); 2 when start-up fails (the message says which part and why);
3 when the pipeline fails while running (systemd's ``Restart=on-failure`` then restarts harkd).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from daemon.audio import AudioSource, AudioSourceError, open_source
from daemon.bias import BIAS_STATE_FILE, BiasFileError, BiasGraphCache
from daemon.config import Config, WakeConfig
from daemon.endpoint import endpoints_from_config
from daemon.modelcard import ModelError
from daemon.mqtt import MqttError, Publisher, settings_from_config
from daemon.outbox import OutboxError, open_outbox
from daemon.pipeline import BiasStore, Pipeline, PipelineSettings
from daemon.recognizer import DecodeConfig, Recognizer
from daemon.systemd_notify import Notifier
from daemon.trigger import Trigger, VadTrigger
from daemon.wake import WakeTrigger

__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "EXIT_OK", "EXIT_STARTUP", "Service", "StartupError",
           "make_trigger"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 1  # the configuration is invalid
EXIT_STARTUP = 2  # a part could not start (models, audio file, outbox, TLS files)
EXIT_FAILURE = 3  # the pipeline failed while running

READY_WAIT_S = 3.0  # seconds start-up waits for the microphone and for the broker before READY=1 anyway
DRAIN_WAIT_S = 5.0  # seconds the publisher gets at shutdown to deliver what is queued, when connected


class StartupError(Exception):
    """A part of the daemon could not start; the message names the part and says why."""


def make_trigger(wake: WakeConfig) -> Trigger:
    """The trigger ``wake.engine`` names."""
    if wake.engine == "vad":
        return VadTrigger(pre_roll_ms=wake.pre_roll_ms)
    try:
        return WakeTrigger.from_config(wake)
    except (ModelError, ValueError, OSError) as exc:
        raise StartupError(f"wake model: {exc} (set wake.model_dir, install the model as {wake.model_path}, "
                           f"or set wake.engine: vad to start utterances on any speech)") from exc


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class Service:
    """One run of the daemon; :meth:`run` returns the exit status."""

    def __init__(self, config: Config, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier if notifier is not None else Notifier()
        self.started_at = time.monotonic()
        self.recognizer: Recognizer | None = None
        self.source: AudioSource | None = None
        self.publisher: Publisher | None = None
        self.pipeline: Pipeline | None = None
        self._stop_requested = threading.Event()

    def request_stop(self) -> None:
        """Stop soon (what SIGTERM and SIGINT do); safe from any thread."""
        self._stop_requested.set()

    def run(self) -> int:
        previous = self._install_signal_handlers()
        try:
            with contextlib.ExitStack() as stack:
                try:
                    self._start(stack)
                except StartupError as exc:
                    log.error("cannot start: %s", exc)
                    self.notifier.status(f"cannot start: {exc}")
                    return EXIT_STARTUP
                return self._serve()
        finally:
            self._restore_signal_handlers(previous)

    # -- start-up ------------------------------------------------------------------------------------------

    def _step(self, text: str) -> None:
        log.info("%s", text)
        self.notifier.status(text)

    def _start(self, stack: contextlib.ExitStack) -> None:
        config = self.config
        # 1. models
        model_dir = config.recognizer.model_path
        self._step(f"loading the recogniser from {model_dir}")
        try:
            recognizer = Recognizer.load(model_dir, threads=config.recognizer.threads,
                                         decode=DecodeConfig(beam=config.recognizer.beam_size,
                                                             verify_bias=config.bias.verify,
                                                             vocabulary_penalty=config.recognizer.vocabulary_penalty))
        except (ModelError, ValueError, OSError) as exc:
            raise StartupError(f"recogniser model: {exc} (set recognizer.model_dir, or install the model "
                               f"as {model_dir})") from exc
        self.recognizer = recognizer
        trigger = make_trigger(config.wake)
        bias = self._bias_store()
        models = {"recognizer": recognizer.version, "wake": trigger.name}
        log.info("recogniser %s loaded (%d threads); utterances start on the %s trigger",
                 recognizer.version, config.recognizer.threads, trigger.name)

        # 2. audio
        self._step("opening the audio source")
        source = open_source(config.audio)
        try:
            source.start()
        except AudioSourceError as exc:
            raise StartupError(f"audio: {exc}") from exc
        stack.callback(source.stop)
        self.source = source
        if not _wait_until(lambda: source.stats.state in ("running", "ended"), READY_WAIT_S):
            log.warning("no audio yet (%s); going on, it is retried in the background", source.stats.status)

        # 3. MQTT
        mqtt = config.mqtt
        self._step(f"connecting to the MQTT broker {mqtt.host}:{mqtt.port}")
        try:
            outbox = open_outbox(config)
        except OutboxError as exc:
            raise StartupError(f"MQTT outbox: {exc}") from exc
        stack.callback(outbox.close)
        try:
            publisher = Publisher(settings_from_config(config), outbox, models=models, on_bias_set=bias.set,
                                  started_at=self.started_at)
        except MqttError as exc:
            raise StartupError(str(exc)) from exc
        publisher.start()
        stack.callback(self._stop_publisher, publisher)
        self.publisher = publisher
        if not publisher.wait_connected(READY_WAIT_S):
            status = publisher.status()
            log.warning("MQTT broker %s:%d not reachable yet (%s); messages wait in the outbox", mqtt.host,
                        mqtt.port, status.last_error or "no answer")

        # 4. pipeline
        pipeline = Pipeline(recognizer, trigger, publisher, PipelineSettings.from_config(config),
                            lambda: endpoints_from_config(config), source=source, notifier=self.notifier,
                            bias=bias, make_bias=BiasGraphCache(recognizer.tokens, config.bias.boost,
                                                                     hold=config.bias.hold),
                            models=models, publisher_status=publisher.status)
        pipeline.start()
        stack.callback(pipeline.stop)
        self.pipeline = pipeline

        # 5. ready
        line = pipeline.status_line()
        self.notifier.ready(line)
        log.info("harkd ready: %s", line)

    def _bias_store(self) -> BiasStore:
        saved = self.config.state_dir / BIAS_STATE_FILE
        store = BiasStore(saved)
        configured = self.config.bias.file
        if configured is not None:
            try:
                store.load(configured)
            except BiasFileError as exc:
                raise StartupError(f"bias.file: {exc}") from exc
        elif saved.is_file():
            try:
                store.load(saved)
            except BiasFileError as exc:
                log.warning("ignoring the saved bias list: %s", exc)
        return store

    # -- running and stopping --------------------------------------------------------------------------------

    def _serve(self) -> int:
        pipeline = self.pipeline
        if pipeline is None:
            return EXIT_FAILURE
        while not self._stop_requested.wait(0.2):
            if pipeline.done.is_set():
                break
        if pipeline.error is not None:
            self.notifier.status(f"failed: {pipeline.error}")
            return EXIT_FAILURE
        reason = "stop requested" if self._stop_requested.is_set() else "the audio ended"
        log.info("stopping: %s", reason)
        self.notifier.stopping(f"stopping: {reason}")
        return EXIT_OK

    def _stop_publisher(self, publisher: Publisher) -> None:
        if publisher.connected and not publisher.wait_idle(DRAIN_WAIT_S):
            log.warning("MQTT: %d message(s) not delivered within %.0f s; kept in the outbox for the next start",
                        publisher.status().pending, DRAIN_WAIT_S)
        publisher.stop()

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may set handlers; the caller uses request_stop()

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("received %s", signal.Signals(signum).name)
            self._stop_requested.set()

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

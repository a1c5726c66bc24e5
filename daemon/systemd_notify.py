"""systemd integration: readiness and watchdog notifications, and logging to the journal.

:class:`Notifier` speaks the sd_notify datagram protocol to ``$NOTIFY_SOCKET``: newline-separated
``KEY=VALUE`` fields in one datagram (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``). It sends
the datagram itself, non-blocking (abstract ``@name`` sockets included): libsystemd's ``sd_notify`` (behind
systemd-python's ``systemd.daemon.notify``) blocks while the socket's queue is full and holds the
interpreter while it does, freezing the whole daemon, so the library is only used when asked for
(``use_library=True``). Outside systemd (no socket) every call is a cheap no-op that returns False.

The watchdog interval comes from ``$WATCHDOG_USEC`` (honoured only if ``$WATCHDOG_PID`` is unset or is
this process). Ping from the thread that does the work, so a stuck pipeline stops the pings and systemd
restarts the service: :meth:`Notifier.watchdog_if_due` sends at most every half interval.

:func:`setup_logging` sends log records to journald as structured entries when harkd runs under
systemd (``$JOURNAL_STREAM`` names our stderr) and systemd-python is installed; else to stderr, with
``<N>`` priority prefixes that journald understands when stderr is a journal stream.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Literal, TextIO

log = logging.getLogger(__name__)


def _library_notify() -> Callable[..., bool] | None:
    try:
        from systemd import daemon as sd_daemon
    except ImportError:
        return None
    notify: Callable[..., bool] = sd_daemon.notify
    return notify


def _socket_address(path: str) -> str | bytes:
    """``@name`` is an abstract socket (leading NUL byte); anything else is a file system path."""
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were forked or exec'd by the real service process)
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
        return None
    return usec if usec > 0 else None


class Notifier:
    """Send sd_notify messages; see the module docstring."""

    def __init__(self, socket_path: str | None = None, *, env: Mapping[str, str] | None = None,
                 use_library: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """``socket_path`` None: ``$NOTIFY_SOCKET``. ``use_library`` True: send through systemd-python
        (only for the socket named in the environment, since that is the one it reads); see the module
        docstring for why that is not the default."""
        environ = os.environ if env is None else env
        env_socket = environ.get("NOTIFY_SOCKET") or None
        self.socket_path = socket_path if socket_path is not None else env_socket
        usec = _watchdog_usec(environ)
        self.watchdog_interval_s: float | None = usec / 1e6 if usec else None  # seconds; None: no watchdog
        self._clock = clock
        self._last_ping: float | None = None
        self._library: Callable[..., bool] | None = None
        if use_library and self.socket_path is not None and self.socket_path == env_socket:
            self._library = _library_notify()
            if use_library and self._library is None:
                raise RuntimeError("systemd-python is not installed")
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (harkd runs as a Type=notify service)."""
        return self.socket_path is not None

    @property
    def uses_library(self) -> bool:
        return self._library is not None

    def notify(self, fields: Mapping[str, str | int]) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; True if it was delivered."""
        if self.socket_path is None:
            return False
        message = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        try:
            if self._library is not None:
                return bool(self._library(message))
            return self._send(message.encode("utf-8"))
        except OSError as exc:
            if not self._warned:  # once: a vanished socket would otherwise flood the log
                log.warning("cannot notify systemd at %s: %s", self.socket_path, exc)
                self._warned = True
            return False

    def _send(self, data: bytes) -> bool:
        if self.socket_path is None:
            return False
        if self.socket_path.startswith("vsock:"):
            raise OSError("vsock notification sockets need systemd-python")
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sent = self._sock.sendto(data, socket.MSG_DONTWAIT, _socket_address(self.socket_path))  # never block harkd
        return sent == len(data)

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: audio, models and MQTT are up."""
        fields: dict[str, str | int] = {"READY": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.notify(fields)

    def status(self, text: str) -> bool:
        """``STATUS=...``: one line shown by ``systemctl status``."""
        return self.notify({"STATUS": text})

    def watchdog(self) -> bool:
        """``WATCHDOG=1`` now."""
        sent = self.notify({"WATCHDOG": 1})
        self._last_ping = self._clock()
        return sent

    def watchdog_if_due(self) -> bool:
        """``WATCHDOG=1`` if half the watchdog interval has passed since the last ping; cheap to call."""
        if self.watchdog_interval_s is None or not self.enabled:
            return False
        if self._last_ping is not None and self._clock() - self._last_ping < self.watchdog_interval_s / 2:
            return False
        return self.watchdog()

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutting down."""
        fields: dict[str, str | int] = {"STOPPING": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.notify(fields)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


# ------------------------------------------------------------------------------------------ logging


def under_journald(env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """True if ``stream`` (stderr) is connected to journald, as ``$JOURNAL_STREAM`` (``dev:inode``) says."""
    environ = os.environ if env is None else env
    value = environ.get("JOURNAL_STREAM")
    if not value:
        return False
    target = sys.stderr if stream is None else stream
    try:
        dev, ino = (int(part) for part in value.split(":", 1))
        info = os.fstat(target.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (dev, ino)


_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                    logging.CRITICAL: 2}


class PriorityPrefixFormatter(logging.Formatter):
    """``<N>`` syslog priority before each line (sd-daemon(3)); journald turns it into the entry's priority.
    No time stamp: the journal adds its own."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def make_log_handler(journald: Literal["auto", "on", "off"] = "auto", *,
                     env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> logging.Handler:
    """The handler for harkd's logs (see the module docstring); ``journald="on"`` insists on journald."""
    target = sys.stderr if stream is None else stream
    journal = journald == "on" or (journald == "auto" and under_journald(env, target))
    if journal:
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            handler: logging.Handler = logging.StreamHandler(target)
            handler.setFormatter(PriorityPrefixFormatter())
            return handler
        journal_handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="harkd")
        return journal_handler
    handler = logging.StreamHandler(target)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def setup_logging(level: str = "INFO", journald: Literal["auto", "on", "off"] = "auto") -> logging.Handler:
    """Replace the root logger's handlers with :func:`make_log_handler`'s; return the handler."""
    handler = make_log_handler(journald)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


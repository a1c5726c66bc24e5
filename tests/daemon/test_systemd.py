from __future__ import annotations

import io
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.systemd_notify import (
    Notifier,
    PriorityPrefixFormatter,
    make_log_handler,
    under_journald,
)


class NotifySocket:
    """A unix datagram socket bound where systemd's would be; reads what the notifier sends."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET spells it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(2.0)

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    def nothing_pending(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(2.0)
        return False


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    yield listener
    listener.sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    listener = NotifySocket(f"@harkd-test-{uuid.uuid4().hex}")
    yield listener
    listener.sock.close()


def exchange(notifier: Notifier, listener: NotifySocket) -> list[str]:
    assert notifier.ready("listening on 'USB mic'")
    assert notifier.status("wake word armed\nsecond line")
    assert notifier.watchdog()
    assert notifier.stopping()
    return [listener.receive() for _ in range(4)]


EXPECTED = ["READY=1\nSTATUS=listening on 'USB mic'", "STATUS=wake word armed second line", "WATCHDOG=1",
            "STOPPING=1"]


def test_fallback_speaks_the_datagram_protocol(notify_socket: NotifySocket) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": notify_socket.address}, use_library=False)
    assert notifier.enabled and not notifier.uses_library
    assert exchange(notifier, notify_socket) == EXPECTED
    notifier.close()


def test_fallback_reaches_abstract_sockets(abstract_socket: NotifySocket) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": abstract_socket.address}, use_library=False)
    assert exchange(notifier, abstract_socket) == EXPECTED


def test_systemd_python_is_used_only_when_asked(notify_socket: NotifySocket,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("systemd.daemon", reason="systemd-python is not installed (harkd[systemd])")
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)  # libsystemd reads the environment itself
    assert not Notifier().uses_library  # its sd_notify can block the daemon: see daemon/systemd_notify.py
    notifier = Notifier(use_library=True)
    assert notifier.uses_library
    assert exchange(notifier, notify_socket) == EXPECTED


def test_a_full_notify_socket_never_blocks(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    notifier = Notifier()
    sent = [notifier.status(f"message {i}") for i in range(2000)]  # nobody reads: the queue fills up
    assert sent[0] is True and sent[-1] is False


def test_an_explicit_socket_path_never_goes_through_the_library(notify_socket: NotifySocket,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/elsewhere")
    notifier = Notifier(notify_socket.address)
    assert not notifier.uses_library
    assert notifier.ready() and notify_socket.receive() == "READY=1"


def test_outside_systemd_everything_is_a_quiet_no_op() -> None:
    notifier = Notifier(env={})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    assert notifier.ready() is False and notifier.status("x") is False and notifier.watchdog() is False
    assert notifier.watchdog_if_due() is False


def test_a_vanished_socket_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}, use_library=False)
    with caplog.at_level(logging.WARNING):
        assert notifier.status("a") is False
        assert notifier.status("b") is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


def test_watchdog_interval_from_the_environment() -> None:
    pid = str(os.getpid())
    assert Notifier(env={"WATCHDOG_USEC": "30000000"}).watchdog_interval_s == 30.0
    assert Notifier(env={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}).watchdog_interval_s == 30.0
    assert Notifier(env={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert Notifier(env={"WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
    assert Notifier(env={"WATCHDOG_USEC": "0"}).watchdog_interval_s is None


def test_watchdog_if_due_pings_every_half_interval(notify_socket: NotifySocket) -> None:
    now = [1000.0]
    notifier = Notifier(env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "10000000"},
                        use_library=False, clock=lambda: now[0])
    assert notifier.watchdog_if_due()  # the first call always pings
    assert notify_socket.receive() == "WATCHDOG=1"
    now[0] += 4.9
    assert not notifier.watchdog_if_due() and notify_socket.nothing_pending()
    now[0] += 0.1
    assert notifier.watchdog_if_due() and notify_socket.receive() == "WATCHDOG=1"


# ------------------------------------------------------------------------------------------ logging


def test_under_journald_compares_the_stream_identity(tmp_path: Path) -> None:
    with (tmp_path / "stderr").open("w") as stream, (tmp_path / "other").open("w") as other:
        info = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert under_journald(env, stream)
        assert not under_journald(env, other)  # stderr was redirected after systemd started us
        assert not under_journald({}, stream)
        assert not under_journald({"JOURNAL_STREAM": "garbage"}, stream)
        assert not under_journald(env, io.StringIO())  # no file descriptor at all


def test_log_handler_choice(tmp_path: Path) -> None:
    with (tmp_path / "stderr").open("w") as stream:
        info = os.fstat(stream.fileno())
        journal_env = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        plain = make_log_handler("auto", env={}, stream=stream)
        assert isinstance(plain, logging.StreamHandler) and not isinstance(plain.formatter,
                                                                           PriorityPrefixFormatter)
        assert isinstance(make_log_handler("off", env=journal_env, stream=stream), logging.StreamHandler)
        chosen = make_log_handler("auto", env=journal_env, stream=stream)
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            assert isinstance(chosen.formatter, PriorityPrefixFormatter)
        else:
            assert isinstance(chosen, JournalHandler)


def test_priority_prefixes_for_journald_streams() -> None:
    formatter = PriorityPrefixFormatter()

    def line(level: int, message: str) -> str:
        return formatter.format(logging.LogRecord("daemon.audio", level, __file__, 1, message, None, None))

    assert line(logging.WARNING, "mic gone") == "<4>daemon.audio: mic gone"
    assert line(logging.ERROR, "a\nb") == "<3>daemon.audio: a\n<3>b"
    assert line(logging.DEBUG, "x").startswith("<7>") and line(logging.INFO, "x").startswith("<6>")

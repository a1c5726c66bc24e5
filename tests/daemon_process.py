"""Run ``harkd run`` as a real process for tests: its config, its sd_notify socket, a microphone to feed.

* :func:`write_config` writes a harkd YAML config for a test (no firmware profile, logs to stderr).
* :class:`NotifyListener` binds a unix datagram socket where systemd's would be and collects what the
  daemon sends (``READY=1``, ``STATUS=``, ``WATCHDOG=1``, ``STOPPING=1``) with arrival times.
* :class:`Harkd` starts ``python -m daemon.cli run`` with an environment, waits for ``READY=1``, stops it
  with SIGTERM and keeps its log.
* :class:`FifoMicrophone` writes audio into the FIFO behind an ALSA capture device
  (``AlsaDevices.add_fifo_device``) in real time, like a microphone: quiet noise, and recordings on demand.
  PortAudio blocks on an empty FIFO (and so does closing the stream), so it keeps writing until stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
RATE = 16000


def write_config(path: Path, settings: Mapping[str, Any]) -> Path:
    """A config file with ``settings`` over test defaults (no profile, stderr logging, state under path)."""
    base: dict[str, Any] = {
        "profile": "none",
        "state_dir": str(path.parent / "state"),
        "logging": {"level": "INFO", "journald": "off"},
    }
    for key, value in settings.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    path.write_text(yaml.safe_dump(base, sort_keys=False), encoding="utf-8")
    return path


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.pop("JOURNAL_STREAM", None)
    env.update(extra or {})
    return env


class NotifyListener:
    """Collects sd_notify datagrams sent to ``path`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []  # (time.monotonic(), datagram)
        self._changed = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))
                self._changed.notify_all()

    def fields(self) -> list[tuple[float, dict[str, str]]]:
        """Each datagram as its KEY=VALUE fields."""
        with self._changed:
            return [(t, dict(line.split("=", 1) for line in m.splitlines() if "=" in line))
                    for t, m in self.messages]

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], timeout: float) -> tuple[float, dict[str, str]]:
        """The first datagram whose fields satisfy ``predicate``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for t, fields in self.fields():
                    if predicate(fields):
                        return t, fields
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no such notification within {timeout} s; got {self.messages}")
                self._changed.wait(remaining)

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self._sock.close()


class Harkd:
    """``harkd run --config CONFIG`` as a child process (see the module docstring)."""

    def __init__(self, config: Path, env: Mapping[str, str], *, log: Path | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.env = dict(env)
        self.log_path = log or config.with_suffix(".log")
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Harkd:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "--config", str(self.config), *self.args],
                env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its exit status."""
        if self.process is None:
            raise RuntimeError("not started")
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"harkd did not exit within {timeout} s; log:\n{self.log()[-4000:]}") from None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; the exit status."""
        if self.process is None:
            raise RuntimeError("not started")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def __enter__(self) -> Harkd:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class FifoMicrophone:
    """Feeds the FIFO behind an ALSA capture device in real time (see the module docstring)."""

    BLOCK = 320  # samples per write (20 ms)

    def __init__(self, fifo: Path, noise_level: float = 30.0, seed: int = 1) -> None:
        # Read-write: opening never blocks, and the reader never sees end-of-file while we hold it.
        # Non-blocking: when nobody reads (harkd not started yet, or gone), blocks are dropped, as a
        # microphone's would be.
        self._fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self._rng = np.random.default_rng(seed)
        self._noise = noise_level
        self._queue: list[npt.NDArray[np.int16]] = []
        self._offset = 0  # samples of the first queued recording written so far
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.played_at: list[float] = []  # time.monotonic() when each play() began to be written

    def start(self) -> None:
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()

    def play(self, samples: npt.NDArray[np.int16]) -> None:
        with self._lock:
            self._queue.append(np.asarray(samples, dtype=np.int16))
            self._idle.clear()

    def wait_played(self, timeout: float) -> None:
        if not self._idle.wait(timeout):
            raise AssertionError(f"the recording was not played within {timeout} s")

    def _next_block(self) -> npt.NDArray[np.int16]:
        with self._lock:
            if self._queue:
                current = self._queue[0]
                if self._offset == 0:
                    self.played_at.append(time.monotonic())
                block = current[self._offset:self._offset + self.BLOCK]
                self._offset += self.BLOCK
                if self._offset >= len(current):
                    self._queue.pop(0)
                    self._offset = 0
                    if not self._queue:
                        self._idle.set()
                if len(block) == self.BLOCK:
                    return block
                pad = self._quiet(self.BLOCK - len(block))
                return np.concatenate([block, pad])
        return self._quiet(self.BLOCK)

    def _quiet(self, n: int) -> npt.NDArray[np.int16]:
        return (self._rng.normal(size=n) * self._noise).astype(np.int16)

    def _write(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                os.write(self._fd, self._next_block().astype("<i2").tobytes())
            except BlockingIOError:
                pass  # the FIFO is full: nobody is reading
            due += self.BLOCK / RATE
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.1:
                due = time.monotonic()  # the reader stalled us: go on in real time, do not burst

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        os.close(self._fd)

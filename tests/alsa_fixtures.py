"""ALSA devices backed by files, so tests drive real PortAudio without sound hardware.

An ALSA ``file`` plugin PCM reads its ``infile`` as raw little-endian 16-bit samples (interleaved when
more than one channel is opened). Two flavours:

* a regular file: PortAudio gets the whole file at once, far faster than real time, then stale data over
  and over (good for overflow tests);
* a FIFO (:meth:`AlsaDevices.add_fifo_device`): the test keeps it open for writing (``O_RDWR``, so
  neither side blocks on open) and writes the samples into it; capture then delivers exactly those samples
  and waits for more, which makes bit-exact comparisons possible. Closing the test's end gives the reader
  end-of-file, so the stream can be stopped.

A playback device (:meth:`AlsaDevices.add_output_device`) writes what is played to a raw file.

PortAudio reads the ALSA configuration when it initialises, so captures run in a subprocess whose
``ALSA_CONFIG_PATH`` names the system ``alsa.conf`` plus our own file (:meth:`AlsaDevices.run_python`).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
REPO_ROOT = Path(__file__).resolve().parents[1]


def alsa_unavailable_reason() -> str | None:
    """Why file-backed ALSA devices cannot work here, or None if they can."""
    if ctypes.util.find_library("portaudio") is None:
        return "libportaudio2 is not installed (apt-get install libportaudio2)"
    if not SYSTEM_ALSA_CONF.is_file():
        return f"{SYSTEM_ALSA_CONF} is missing (apt-get install alsa-utils / libasound2)"
    return None


class AlsaDevices:
    """Writes an asound.conf with file-backed capture PCMs in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "asound.conf"
        self.conf.write_text("")

    def _add_pcm(self, name: str, infile: Path) -> None:
        entry = (f'pcm.{name} {{ type file; slave {{ pcm "null" }} file "/dev/null"; '
                 f'infile "{infile}"; format "raw" }}\n')
        with self.conf.open("a") as handle:
            handle.write(entry)

    def add_file_device(self, name: str, samples: npt.NDArray[np.int16]) -> Path:
        """A capture device that plays ``samples`` (n, or n × channels interleaved) from a regular file."""
        raw = self.directory / f"{name}.raw"
        np.ascontiguousarray(samples, dtype="<i2").tofile(raw)
        self._add_pcm(name, raw)
        return raw

    def add_fifo_device(self, name: str) -> Path:
        """A capture device reading a named pipe; returns the pipe's path (see the module docstring)."""
        fifo = self.directory / f"{name}.fifo"
        os.mkfifo(fifo)
        self._add_pcm(name, fifo)
        return fifo

    def add_output_device(self, name: str) -> Path:
        """A playback device that writes what is played to a raw file (little-endian 16-bit, interleaved);
        returns the file's path. Like the capture devices it is not paced: it takes audio as fast as it comes."""
        out = self.directory / f"{name}.out.raw"
        entry = f'pcm.{name} {{ type file; slave {{ pcm "null" }} file "{out}"; format "raw" }}\n'
        with self.conf.open("a") as handle:
            handle.write(entry)
        return out

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ALSA_CONFIG_PATH"] = f"{SYSTEM_ALSA_CONF}:{self.conf}"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        return env

    def run_python(self, code: str, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run ``code`` (``args`` in its sys.argv[1:]) with this ALSA configuration; it must print one JSON
        object as its last line, which is returned."""
        proc = subprocess.run([sys.executable, "-c", code, *args], env=self.env(), cwd=self.directory,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise AssertionError(
                f"capture subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"capture subprocess printed nothing:\n{proc.stderr}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

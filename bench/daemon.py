"""Daemon benchmark: memory, end-of-speech to final-lattice latency, speculative lead, real-time decoding.

    python -m bench.daemon [--model DIR] [--repeat 3] [--cores 0] [--media-sim PERCENT] [--json out.json]

``harkd run`` captures from a real PortAudio device: an ALSA capture device backed by a FIFO, which this
benchmark fills in real time (20 ms blocks) with the bundled recording (``daemon/samples/commands.wav``,
two commands, each after "hey jarvis") played ``--repeat`` times. The daemon is pinned to ``--cores`` with
taskset (one core by default), the recogniser on one thread, utterances started by the shipped wake model.
A subscriber on a private mosquitto times the messages. With ``--media-sim PERCENT``, ``harkd media-sim``
plays music on the same cores at the same priority (no slices: the worst case), obeying the daemon's duck
requests, with PERCENT of a core of extra busy work: harkd measured while it shares the CPU with a player.

Measured (printed as one JSON object):

* ``rss_mb``: resident memory of the daemon once ready (models loaded, audio and MQTT up) and its peak
  (VmHWM) at the end. Target: at most 150 MB.
* ``latency_ms``: from the end of speech to the arrival of the final lattice at the subscriber, per
  utterance, and the median. The end of speech is the end of the last 10 ms frame louder than
  ``SPEECH_DBFS`` in the recording (its background is at about -66 dBFS), on the wall clock of the moment
  it was spoken (a block goes into the device once it has been "spoken", as from a microphone). Target:
  median at most endpoint.final_silence_ms + 100 ms.
* ``speculative_lead_ms``: how long before the final lattice the speculative one arrived. Target: at
  least 150 ms.
* ``real_time``: audio frames dropped and gaps in the audio (from the metrics messages), the real-time
  factor and the largest lag reported. Target: nothing dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
import yaml

from daemon.demo import Broker
from daemon.frontend import SAMPLE_RATE
from daemon.lattice import Lattice
from daemon.messages import Metrics, Wake, decode
from daemon.modelcard import CARD_NAME
from daemon.paths import default_model_dir

SAMPLE = Path(__file__).resolve().parents[1] / "daemon" / "samples" / "commands.wav"
SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
DEVICE_ID = "bench"
BLOCK = 320  # samples written to the device at a time (20 ms)
SPEECH_DBFS = -50.0  # frames louder than this are speech, for the ground truth
MIN_PAUSE_S = 0.5  # quieter stretches at least this long separate utterances
FINAL_SILENCE_MS = 600  # endpoint.final_silence_ms used (the default)
TARGET_RSS_MB = 150.0
TARGET_LATENCY_SLACK_MS = 100.0
TARGET_SPECULATIVE_LEAD_MS = 150.0


def speech_ends(samples: npt.NDArray[np.int16]) -> list[int]:
    """Sample index at the end of each utterance's speech (see the module docstring)."""
    frame = SAMPLE_RATE // 100
    n = len(samples) // frame
    x = samples[: n * frame].astype(np.float64).reshape(n, frame) / 32768.0
    level = 10 * np.log10(np.mean(x * x, axis=1) + 1e-12)
    loud = np.flatnonzero(level > SPEECH_DBFS)
    ends = []
    for i, j in zip(loud, [*loud[1:], None], strict=True):
        if j is None or (j - i) * 0.01 >= MIN_PAUSE_S:
            ends.append(int((i + 1) * frame))
    return ends


class FifoDevice:
    """An ALSA capture device reading a FIFO that is written in real time; records when each block went in."""

    def __init__(self, directory: Path, name: str) -> None:
        self.fifo = directory / f"{name}.fifo"
        os.mkfifo(self.fifo)
        self.conf = directory / "asound.conf"
        self.conf.write_text(f'pcm.{name} {{ type file; slave {{ pcm "null" }} file "/dev/null"; '
                             f'infile "{self.fifo}"; format "raw" }}\n')
        self._fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        self._audio: npt.NDArray[np.int16] | None = None
        self.started_at: float | None = None  # time.monotonic() when the first sample was "spoken"
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def env(self) -> dict[str, str]:
        return {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{self.conf}"}

    def start(self) -> None:
        self._thread.start()

    def play(self, samples: npt.NDArray[np.int16]) -> None:
        self._audio = samples

    def _write(self) -> None:
        rng = np.random.default_rng(0)
        due = time.monotonic()
        position = 0
        while not self._stop.is_set():
            audio = self._audio
            if audio is not None and position < len(audio):
                if position == 0:
                    # A microphone hands over a block once it has been spoken: this block's first sample
                    # was "spoken" one block ago.
                    self.started_at = time.monotonic() - BLOCK / SAMPLE_RATE
                block = audio[position:position + BLOCK]
                position += len(block)
                if len(block) < BLOCK:
                    block = np.concatenate([block, np.zeros(BLOCK - len(block), np.int16)])
                if position >= len(audio):
                    self.finished.set()
            else:
                block = (rng.normal(size=BLOCK) * 16).astype(np.int16)
            try:
                os.write(self._fd, block.astype("<i2").tobytes())
            except BlockingIOError:
                pass  # nobody reads yet
            due += BLOCK / SAMPLE_RATE
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._fd)


@dataclass
class Observed:
    messages: list[tuple[float, str, bytes]] = field(default_factory=list)  # (arrival, topic, payload)


def _subscribe(port: int, observed: Observed) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    # Not "harkd-<device_id>": that is the daemon's client id, and the broker would drop one of the two.
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-subscriber")
    ready: queue.Queue[bool] = queue.Queue()
    client.on_connect = lambda c, u, f, r, p: c.subscribe(f"harkd/{DEVICE_ID}/#", qos=1)
    client.on_subscribe = lambda *args: ready.put(True)
    client.on_message = lambda c, u, m: observed.messages.append((time.monotonic(), m.topic, bytes(m.payload)))
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.get(timeout=10)
    return client


class NotifySocket:
    """Where harkd sends READY=1: read all the time (libsystemd blocks the sender when the queue is full)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ready = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                if b"READY=1" in self._sock.recv(65536):
                    self.ready.set()
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self._sock.close()


def _memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def _start_media_sim(cpu_load: float, port: int, cores: str, pinned: bool, env: dict[str, str],
                     log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "daemon.cli", "-v", "media-sim", "--output", "null",
               "--cpu-load", str(cpu_load), "--device-id", DEVICE_ID, "--broker", f"127.0.0.1:{port}",
               "--profile", "none"]
    if pinned:
        command = ["taskset", "-c", cores, *command]
    with log_path.open("wb") as log:
        return subprocess.Popen(command, env={**env, "NOTIFY_SOCKET": ""}, stdout=log, stderr=subprocess.STDOUT)


def run(model_dir: Path, repeat: int, cores: str, media_sim: float | None = None) -> dict[str, Any]:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    recording, rate = sf.read(SAMPLE, dtype="int16")
    if rate != SAMPLE_RATE:
        raise SystemExit(f"{SAMPLE}: expected {SAMPLE_RATE} Hz")
    audio = np.tile(np.asarray(recording, dtype=np.int16), repeat)
    ends = speech_ends(audio)
    with tempfile.TemporaryDirectory(prefix="harkd-bench-") as tmp:
        directory = Path(tmp)
        broker = Broker(mosquitto, directory)
        observed = Observed()
        client = _subscribe(broker.port, observed)
        device = FifoDevice(directory, "benchmic")
        notify = NotifySocket(directory / "notify.sock")
        config = {
            "device_id": DEVICE_ID, "profile": "none", "state_dir": str(directory / "state"),
            "audio": {"source": "mic", "device": "benchmic", "block_ms": 20},
            "recognizer": {"model_dir": str(model_dir), "threads": 1},
            "endpoint": {"final_silence_ms": FINAL_SILENCE_MS},
            "mqtt": {"host": "127.0.0.1", "port": broker.port},
            "metrics": {"interval_s": 1},
            "logging": {"level": "INFO", "journald": "off"},
        }
        config_path = directory / "harkd.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        env = {**os.environ, **device.env(), "NOTIFY_SOCKET": str(directory / "notify.sock")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                          env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "daemon.cli", "run", "--config", str(config_path)]
        pinned = shutil.which("taskset") is not None and cores != "all"
        if pinned:
            command = ["taskset", "-c", cores, *command]
        log_path = directory / "harkd.log"
        player, player_log = None, ""
        if media_sim is not None:
            player = _start_media_sim(media_sim, broker.port, cores, pinned, env, directory / "media-sim.log")
        with log_path.open("wb") as log:
            harkd = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            if not notify.ready.wait(120):
                raise SystemExit(f"harkd did not report READY=1 within 120 s:\n{log_path.read_text()[-3000:]}")
            memory_ready = _memory_mb(harkd.pid)
            device.start()
            time.sleep(0.5)  # the device is delivering before the recording starts
            device.play(audio)
            device.finished.wait(len(audio) / SAMPLE_RATE + 30)
            time.sleep(FINAL_SILENCE_MS / 1000 + 1.5)  # the last final lattice and a metrics period
            memory_end = _memory_mb(harkd.pid)
            harkd.terminate()
            try:
                status = harkd.wait(30)
            except subprocess.TimeoutExpired:
                harkd.kill()
                raise SystemExit(f"harkd did not stop within 30 s:\n{log_path.read_text()[-3000:]}") from None
        finally:
            if harkd.poll() is None:
                harkd.kill()
            if player is not None:
                player.terminate()
                try:
                    player.wait(10)
                except subprocess.TimeoutExpired:
                    player.kill()
                player_log = (directory / "media-sim.log").read_text(errors="replace")
            device.stop()
            client.loop_stop()
            client.disconnect()
            broker.stop()
            notify.close()
        if status != 0:
            raise SystemExit(f"harkd exited with {status}:\n{log_path.read_text()[-3000:]}")
    started = device.started_at
    if started is None:
        raise SystemExit("the recording was never played")
    report = _report(model_dir, observed, ends, started, memory_ready, memory_end, pinned, cores, len(audio))
    if player is not None:
        ducks = sum(1 for line in player_log.splitlines() if "duck o" in line)
        report["media_sim"] = {"cpu_load_percent": media_sim, "exit_status": player.returncode,
                               "duck_requests_obeyed": ducks, "log_tail": player_log.splitlines()[-3:]}
    return report


def _report(model_dir: Path, observed: Observed, ends: list[int], started: float, memory_ready: dict[str, float],
            memory_end: dict[str, float], pinned: bool, cores: str, samples: int) -> dict[str, Any]:
    wakes: list[tuple[float, Wake]] = []
    speculative: dict[str, float] = {}
    finals: list[tuple[float, Lattice]] = []
    metrics: list[Metrics] = []
    for arrival, topic, payload in observed.messages:
        name = topic.rsplit("/", 1)[-1]
        if name == "wake":
            wakes.append((arrival, decode(Wake, payload)))
        elif name == "lattice":
            lattice = Lattice.from_json(payload)
            if lattice.kind == "speculative":
                speculative[lattice.utterance_id] = arrival  # the last one standing
            else:
                finals.append((arrival, lattice))
        elif name == "metrics":
            metrics.append(decode(Metrics, payload))
    latencies, leads = [], []
    for end in ends:
        spoken_end = started + end / SAMPLE_RATE  # when the end of speech went into the device
        after = [(arrival, lat) for arrival, lat in finals if arrival > spoken_end]
        if not after:
            continue
        arrival, lattice = after[0]
        latencies.append(round((arrival - spoken_end) * 1000, 1))
        if lattice.utterance_id in speculative:
            leads.append(round((arrival - speculative[lattice.utterance_id]) * 1000, 1))
    last = metrics[-1] if metrics else None
    dropped = last.dropped_frames if last is not None else None
    gaps = last.extra.get("audio_gaps") if last is not None else None
    median_latency = statistics.median(latencies) if latencies else None
    min_lead = min(leads) if leads else None
    rss_peak = memory_end.get("VmHWM")
    return {
        "benchmark": "daemon",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "model": str(model_dir),
        "pinned_to_cores": cores if pinned else "no (taskset missing or --cores all)",
        "audio_s": round(samples / SAMPLE_RATE, 2),
        "utterances": {"spoken": len(ends), "wakes": len(wakes), "final_lattices": len(finals)},
        "rss_mb": {"ready": round(memory_ready.get("VmRSS", 0.0), 1), "peak": round(rss_peak or 0.0, 1)},
        "final_silence_ms": FINAL_SILENCE_MS,
        "latency_ms": {"median": None if median_latency is None else round(median_latency, 1),
                       "max": max(latencies) if latencies else None,
                       "each": latencies},
        "speculative_lead_ms": {"median": round(statistics.median(leads), 1) if leads else None, "min": min_lead,
                                "each": leads},
        "real_time": {
            "dropped_frames": dropped,
            "audio_gaps": gaps,
            "real_time_factor": [m.real_time_factor for m in metrics if m.real_time_factor is not None],
            "max_lag_ms": max((round(m.lag_s * 1000, 1) for m in metrics if m.lag_s is not None), default=None),
            "cpu_percent": [m.cpu_percent for m in metrics if m.cpu_percent is not None],
        },
        "targets": {
            "rss_at_most_150_mb": rss_peak is not None and rss_peak <= TARGET_RSS_MB,
            "median_latency_within_silence_plus_100_ms": median_latency is not None
            and median_latency <= FINAL_SILENCE_MS + TARGET_LATENCY_SLACK_MS,
            "speculative_at_least_150_ms_early": min_lead is not None and min_lead >= TARGET_SPECULATIVE_LEAD_MS,
            "no_frame_dropped": dropped == 0 and gaps == 0,
            "every_utterance_found": len(finals) == len(ends),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: models/recognizer)")
    parser.add_argument("--repeat", type=int, default=3, help="times the two-command recording is played")
    parser.add_argument("--cores", default="0", help="taskset CPU list for the daemon, or 'all' (default 0)")
    parser.add_argument("--media-sim", type=float, default=None, metavar="PERCENT",
                        help="run `harkd media-sim` on the same cores with this much extra CPU load (0: a plain "
                             "player); default: no player")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    model_dir = (args.model or default_model_dir("recognizer")).resolve()
    if not (model_dir / CARD_NAME).is_file():
        print(f"bench.daemon: no model at {model_dir}; build it with `make model` or pass --model", file=sys.stderr)
        return 1
    if not SYSTEM_ALSA_CONF.is_file():
        print("bench.daemon: needs ALSA (apt-get install alsa-utils libportaudio2)", file=sys.stderr)
        return 1
    result = run(model_dir, args.repeat, args.cores, args.media_sim)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if all(result["targets"].values()) else 2


if __name__ == "__main__":
    sys.exit(main())

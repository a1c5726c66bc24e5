"""``python -m daemon.demo`` (``make demo``): harkd end to end on a recording, with its MQTT traffic shown.

Starts a private mosquitto on a free loopback port in a temporary directory, runs ``harkd run`` on the
bundled recording (``daemon/samples/commands.wav``: "hey jarvis, call doctor siobhan okafor ... hey jarvis,
turn on the kitchen light", played in real time as if spoken into a microphone) with a small household
bias list (:data:`HOUSEHOLD`), and ``harkd rescore`` beside it as the cloud would; subscribes to
``harkd/demo/#`` and prints what arrives (status, wake, lattices, resets, ducking, results, metrics)
readably. It stops when harkd has played the recording and delivered everything, and exits 0 if final
lattices arrived.

Needs mosquitto (``apt-get install mosquitto``) and the recogniser model (``models/recognizer``, made by
``make model``; ``--model DIR`` takes another model directory).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from daemon.lattice import Lattice, LatticeError
from daemon.messages import MediaDuck, Metrics, PayloadError, Reset, Result, Status, Wake, decode
from daemon.modelcard import CARD_NAME
from daemon.paths import default_model_dir

SAMPLE = Path(__file__).with_name("samples") / "commands.wav"
DEVICE_ID = "demo"
PREFIX = f"harkd/{DEVICE_ID}/"
#: The owner's contacts and appliances, as `harkd contacts sync` would write them to the state directory.
HOUSEHOLD = {"contacts": ["Siobhan Okafor", "Ellie Marsh", "Grandma"],
             "appliances": ["kitchen light", "aquarium pump", "Ellie's night light"]}


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """A throw-away mosquitto on 127.0.0.1 with its files in ``directory``."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.port = _free_port()
        self.log = directory / "mosquitto.log"
        config = directory / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 f"pid_file {directory}/mosquitto.pid"]
        if os.geteuid() == 0:
            lines.append("user root")  # as root, mosquitto would switch to a user that cannot write here
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([executable, "-c", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-1000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Printer:
    """Turns harkd's MQTT messages into lines for people."""

    def __init__(self) -> None:
        self.utterances: dict[str, int] = {}  # utterance id -> 1, 2, ...
        self.finals: list[str] = []

    def _number(self, utterance_id: str) -> str:
        number = self.utterances.setdefault(utterance_id, len(self.utterances) + 1)
        return f"utterance {number}"

    def describe(self, topic: str, payload: bytes) -> list[str]:
        name = topic.removeprefix(PREFIX)
        try:
            return self._describe(name, payload)
        except (PayloadError, LatticeError) as exc:
            return [f"{name:<10} (not valid: {exc})"]

    def _describe(self, name: str, payload: bytes) -> list[str]:
        if name == "status":
            status = decode(Status, payload)
            models = ", ".join(f"{k} {v}" for k, v in status.models.items())
            return [f"{'status':<10} {status.state}" + (f" ({models})" if models else "")]
        if name == "wake":
            wake = decode(Wake, payload)
            return [f"{'wake':<10} {self._number(wake.utterance_id)} begins: {wake.phrase} at {wake.time:.2f} s "
                    f"of audio (score {wake.score:.2f})"]
        if name == "lattice":
            lattice = Lattice.from_json(payload)
            best = lattice.best.text if lattice.best else ""
            lines = [f"{'lattice':<10} {self._number(lattice.utterance_id)} {lattice.kind} #{lattice.seq}: "
                     f"{best!r}  (audio {lattice.start_time:.2f}-{lattice.end_time:.2f} s, "
                     f"{len(lattice.arcs)} arcs)"]
            if lattice.kind == "final":
                self.finals.append(best)
                path = next(lattice.paths(), ())
                words = "  ".join(f"{a.word} {lattice.start_time + a.start:.2f}-{lattice.start_time + a.end:.2f}"
                                  for a in path if a.word)
                if words:
                    lines.append(f"{'':<10} words: {words}")
                for rank, entry in enumerate(lattice.nbest[1:4], start=2):
                    lines.append(f"{'':<10} n-best {rank}: {entry.text!r} (score {entry.score:.2f}, "
                                 f"{entry.score - lattice.nbest[0].score:+.2f})")
            return lines
        if name == "reset":
            reset = decode(Reset, payload)
            return [f"{'reset':<10} {self._number(reset.utterance_id)}: speculative #{reset.speculative_seq} "
                    f"withdrawn ({reset.reason})"]
        if name == "result":
            result = decode(Result, payload)
            return [f"{'result':<10} {self._number(result.utterance_id)}: {result.text!r} "
                    f"(chosen by the {result.source or 'rescorer'} from lattice #{result.seq})"]
        if name == "media/duck":
            duck = decode(MediaDuck, payload)
            return [f"{'media/duck':<10} {'duck' if duck.duck else 'restore'} the media volume"]
        if name == "metrics":
            m = decode(Metrics, payload)
            parts = [f"uptime {m.uptime_s:.1f} s"]
            if m.real_time_factor is not None:
                parts.append(f"real-time factor {m.real_time_factor:.3f}")
            if m.lag_s is not None:
                parts.append(f"lag {m.lag_s * 1000:.0f} ms")
            if m.cpu_percent is not None:
                parts.append(f"CPU {m.cpu_percent:.0f}%")
            if m.dropped_frames is not None:
                parts.append(f"{m.dropped_frames} frames dropped")
            if m.outbox_pending is not None:
                parts.append(f"{m.outbox_pending} queued")
            return [f"{'metrics':<10} " + ", ".join(parts)]
        return [f"{name:<10} {payload[:200].decode('utf-8', 'replace')}"]


def _subscribe(port: int, messages: queue.Queue[tuple[str, bytes]]) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="harkd-demo-viewer")
    subscribed = queue.Queue[bool]()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(PREFIX + "#", qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.put(True)
    client.on_message = lambda c, u, message: messages.put((message.topic, bytes(message.payload)))
    client.connect("127.0.0.1", port)
    client.loop_start()
    subscribed.get(timeout=10)
    return client


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="recogniser model directory (default: the shipped models/recognizer)")
    parser.add_argument("--audio", type=Path, default=SAMPLE, help="WAV/FLAC file to play (default: %(default)s)")
    parser.add_argument("--show-log", action="store_true", help="also show harkd's own log")
    args = parser.parse_args(argv)

    model_dir = args.model or default_model_dir("recognizer")
    if not (model_dir / CARD_NAME).is_file():
        print(f"demo: no recogniser model at {model_dir} (no {CARD_NAME}).\n"
              "  Build the shipped one with `make model`, or point --model at a model directory.",
              file=sys.stderr)
        return 1
    mosquitto = _mosquitto()
    if mosquitto is None:
        print("demo: mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="harkd-demo-") as tmp:
        directory = Path(tmp)
        broker = Broker(mosquitto, directory)
        messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        client = None
        try:
            client = _subscribe(broker.port, messages)
            return _run(args, model_dir, directory, broker, messages)
        finally:
            if client is not None:
                client.loop_stop()
                client.disconnect()
            broker.stop()


def _run(args: argparse.Namespace, model_dir: Path, directory: Path, broker: Broker,
         messages: queue.Queue[tuple[str, bytes]]) -> int:
    bias_file = directory / "household.json"
    bias_file.write_text(json.dumps(HOUSEHOLD), encoding="utf-8")
    config = {
        "device_id": DEVICE_ID,
        "profile": "none",
        "state_dir": str(directory / "state"),
        "bias": {"file": str(bias_file)},
        "audio": {"source": "file", "file": str(args.audio.resolve()), "pace": "realtime"},
        "recognizer": {"model_dir": str(model_dir.resolve()), "threads": 1},
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "metrics": {"interval_s": 2},
        "logging": {"level": "INFO" if args.show_log else "WARNING", "journald": "off"},
    }
    config_path = directory / "harkd.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    print(f"harkd demo: `harkd run` hears {args.audio} in real time; model {model_dir}")
    print(f"bias list: {', '.join(HOUSEHOLD['contacts'] + HOUSEHOLD['appliances'])}")
    print(f"`harkd rescore` answers final lattices with a result; messages on the private broker "
          f"127.0.0.1:{broker.port}, topic {PREFIX}#:\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH")]))
    log_path = directory / "harkd.log"
    started = time.monotonic()
    rescorer = subprocess.Popen([sys.executable, "-m", "daemon.cli", "rescore", "--config", str(config_path),
                                 "--host", "127.0.0.1", "--port", str(broker.port)],
                                env={**env, "NOTIFY_SOCKET": ""}, stdout=subprocess.DEVNULL,
                                stderr=None if args.show_log else subprocess.DEVNULL)
    try:
        return _follow(args, config_path, env, log_path, started, messages)
    finally:
        rescorer.terminate()
        try:
            rescorer.wait(10)
        except subprocess.TimeoutExpired:
            rescorer.kill()


def _follow(args: argparse.Namespace, config_path: Path, env: dict[str, str], log_path: Path, started: float,
            messages: queue.Queue[tuple[str, bytes]]) -> int:
    with log_path.open("wb") as log:
        harkd = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", str(config_path)],
                                 env=env, stdout=log if not args.show_log else None, stderr=subprocess.STDOUT)
        printer = Printer()
        quiet_until = None
        try:
            while True:
                try:
                    topic, payload = messages.get(timeout=0.1)
                except queue.Empty:
                    if harkd.poll() is not None:
                        quiet_until = quiet_until or time.monotonic() + 1.0
                        if time.monotonic() > quiet_until:
                            break
                    continue
                stamp = f"+{time.monotonic() - started:5.2f} s"
                for i, line in enumerate(printer.describe(topic, payload)):
                    print(f"{stamp if i == 0 else '':>9}  {line}", flush=True)
        except KeyboardInterrupt:
            harkd.terminate()
        status = harkd.wait(30)
    if status != 0:
        print(f"\nharkd exited with status {status}; its log:\n{log_path.read_text(errors='replace')[-3000:]}",
              file=sys.stderr)
        return 1
    heard = "; ".join(repr(t) for t in printer.finals) or "nothing"
    print(f"\n{len(printer.finals)} final lattice(s): {heard}")
    return 0 if printer.finals else 1


if __name__ == "__main__":
    sys.exit(main())

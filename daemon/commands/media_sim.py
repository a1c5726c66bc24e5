"""``harkd media-sim``: a music player that ducks when harkd asks, to measure harkd under CPU contention.

It plays a playlist in real time (WAV, FLAC or OGG files, or directories of them; without any, the music of
installed Debian packages such as hedgewars-data, else synthesised chords), looping, to a PortAudio output
device, or with --output to a WAV file or nowhere ("null") paced by the clock. Decoding and resampling load
the CPU as a player does; --cpu-load adds busy work (a percentage of one core) standing for a heavier
player or decoder. It subscribes to <prefix>/<device_id>/media/duck (broker and device id from the harkd
configuration) and ducks the music while harkd listens: down by --duck-db over --attack-ms, back over
--release-ms, and back by itself after --duck-timeout if no "duck off" comes. Playback never waits for the
broker. Under systemd (Type=notify) it reports READY=1 once the first block is out, and STATUS= lines.
Stops on SIGTERM or SIGINT, or after --duration seconds of audio, then logs how much CPU it used.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from daemon.config import ConfigError, add_config_arguments, load_config_from_args
from daemon.ducking import DuckSettings
from daemon.media_sim import (
    ClockSink,
    DeviceSink,
    DuckListener,
    MediaSimError,
    MediaSimulator,
    MusicSource,
    Playlist,
    SimSettings,
    Sink,
    SynthMusic,
    expand_playlist,
    installed_music,
)
from daemon.mqtt import MqttError, settings_from_config
from daemon.systemd_notify import Notifier, setup_logging

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 1  # the configuration or the options are invalid
EXIT_STARTUP = 2  # no playable music, the output cannot be opened, TLS files do not load
EXIT_FAILURE = 3  # playback failed while running


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "media-sim",
        help="simulate a music player beside harkd: real-time playback, CPU load, ducking on media/duck",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("exit status: 0 stopped normally; 1 invalid configuration or options; 2 start-up failed (no "
                "playable music, output device or file, TLS files); 3 playback failed while running"),
    )
    parser.add_argument("playlist", nargs="*", type=Path, metavar="FILE",
                        help="music files (WAV/FLAC/OGG) or directories of them, played in order and looped")
    parser.add_argument("--synth", action="store_true", help="play synthesised chords instead of music files")
    out = parser.add_argument_group("output")
    out.add_argument("--device", default=None, metavar="DEV",
                     help="PortAudio output device: index or part of its name (default: the default output)")
    out.add_argument("--output", default=None, metavar="FILE.wav|null",
                     help="instead of a device, write what is played to a WAV file (16-bit), or discard it "
                          "with 'null'; paced by the monotonic clock")
    out.add_argument("--record", type=Path, default=None, metavar="FILE.wav",
                     help="with a device: also write what is played to this WAV file (the echo reference)")
    out.add_argument("--rate", type=int, default=48000, metavar="HZ", help="output sample rate (default %(default)s)")
    out.add_argument("--channels", type=int, default=2, metavar="N", help="output channels (default %(default)s)")
    out.add_argument("--block-ms", type=float, default=20.0, metavar="MS",
                     help="audio decoded and written per step (default %(default)s)")
    out.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                     help="stop after this much audio (default: play until stopped)")
    load = parser.add_argument_group("CPU load")
    load.add_argument("--cpu-load", type=float, default=0.0, metavar="PERCENT",
                      help="extra busy work per block, in percent of one core, on top of decoding and resampling: "
                           "simulates a heavier player or decoder (0..95, default %(default)s)")
    duck = parser.add_argument_group("ducking")
    defaults = DuckSettings()
    duck.add_argument("--duck-db", type=float, default=defaults.depth_db, metavar="DB",
                      help="gain while ducked when the request names no level (default %(default)s)")
    duck.add_argument("--attack-ms", type=float, default=defaults.attack_ms, metavar="MS",
                      help="ramp time down to --duck-db (default %(default)s)")
    duck.add_argument("--release-ms", type=float, default=defaults.release_ms, metavar="MS",
                      help="ramp time back to full volume (default %(default)s)")
    duck.add_argument("--duck-timeout", type=float, default=defaults.timeout_s, metavar="SECONDS",
                      help="release a duck that is not released within this (default %(default)s)")
    mqtt = parser.add_argument_group("MQTT (defaults from the harkd configuration)")
    mqtt.add_argument("--device-id", default=None, metavar="ID", help="device id in the topics (device_id)")
    mqtt.add_argument("--broker", default=None, metavar="HOST[:PORT]", help="MQTT broker (mqtt.host, mqtt.port)")
    mqtt.add_argument("--no-mqtt", dest="mqtt", action="store_false", help="do not connect: never duck")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


# --------------------------------------------------------------------------------------------- set-up


def _overrides(args: argparse.Namespace) -> list[str]:
    """--device-id and --broker as --set overrides (so the configuration checks them too)."""
    extra = []
    if args.device_id is not None:
        extra.append(f"device_id={json.dumps(args.device_id)}")
    if args.broker is not None:
        host, port = args.broker, None
        if host.startswith("[") and "]" in host:  # [IPv6]:port
            host, _, rest = host[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
        elif host.count(":") == 1:
            host, port = host.split(":")
        extra.append(f"mqtt.host={json.dumps(host)}")
        if port:
            if not port.isdigit():
                raise ValueError(f"--broker {args.broker!r}: the port must be a number")
            extra.append(f"mqtt.port={int(port)}")
    return extra


def _settings(args: argparse.Namespace) -> SimSettings:
    duck = DuckSettings(depth_db=args.duck_db, attack_ms=args.attack_ms, release_ms=args.release_ms,
                        timeout_s=args.duck_timeout)
    if args.output is not None and args.device is not None:
        raise ValueError("give --device or --output, not both")
    if args.record is not None and args.output is not None:
        raise ValueError("--record goes with a device; with --output the file already holds what is played")
    return SimSettings(sample_rate=args.rate, channels=args.channels, block_ms=args.block_ms,
                       cpu_load=args.cpu_load, duration_s=args.duration, duck=duck)


def _source(args: argparse.Namespace, settings: SimSettings) -> MusicSource:
    if args.synth:
        return SynthMusic(settings.sample_rate, settings.channels)
    if args.playlist:
        missing = [str(p) for p in args.playlist if not p.exists()]
        if missing:
            raise MediaSimError(f"no such file or directory: {', '.join(missing)}")
        paths = expand_playlist(args.playlist)
        if not paths:
            raise MediaSimError(f"no audio files ({', '.join(s + '*' for s in ('.wav', '.flac', '.ogg'))}) "
                                f"in {', '.join(map(str, args.playlist))}")
    else:
        paths = installed_music()
        if not paths:
            log.warning("no music files given and none installed (hedgewars-data, asterisk-moh-opsound-wav); "
                        "playing synthesised chords")
            return SynthMusic(settings.sample_rate, settings.channels)
        log.info("playlist: %d music files of installed packages", len(paths))
    return Playlist(paths, settings.sample_rate, settings.channels)


def _sink(args: argparse.Namespace, settings: SimSettings, stop: threading.Event) -> Sink:
    if args.output is not None:
        path = None if args.output == "null" else Path(args.output)
        return ClockSink(path, settings.sample_rate, settings.channels, interrupt=stop)
    return DeviceSink(args.device, settings.sample_rate, settings.channels, settings.block_frames, args.record)


# --------------------------------------------------------------------------------------------- command


def run(args: argparse.Namespace) -> int:
    notifier = Notifier()
    try:
        settings = _settings(args)
        args.overrides = [*args.overrides, *_overrides(args)]
        config = load_config_from_args(args)
        mqtt_settings = settings_from_config(config)
    except (ConfigError, ValueError) as exc:  # MqttError is a ValueError
        print(f"harkd media-sim: {exc}", file=sys.stderr)
        notifier.status("cannot start: invalid configuration or options (see the log)")
        return EXIT_CONFIG
    level = "DEBUG" if getattr(args, "verbose", 0) > 1 else config.logging.level
    setup_logging(level, config.logging.journald)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    source: MusicSource | None = None
    sink: Sink | None = None
    listener: DuckListener | None = None
    try:
        try:
            source = _source(args, settings)
            sink = _sink(args, settings, stop)
            simulator = MediaSimulator(settings, source, sink, notifier=notifier)
            if args.mqtt:
                listener = DuckListener(mqtt_settings, simulator.request)
                listener.start()
        except (MediaSimError, MqttError) as exc:
            log.error("cannot start: %s", exc)
            notifier.status(f"cannot start: {exc}")
            return EXIT_STARTUP
        try:
            stats = simulator.run(stop)
        except Exception as exc:  # a decoder or device failure: logged with its traceback, exit 3
            log.exception("playback failed: %s", exc)
            notifier.status(f"playback failed: {exc}")
            return EXIT_FAILURE
    finally:
        notifier.stopping()
        if listener is not None:
            listener.stop()
        if sink is not None:
            sink.close()
        if source is not None:
            source.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    audio_s = stats.audio_s(settings.sample_rate)
    rejected = listener.rejected if listener is not None else 0
    log.info("played %.1f s of audio in %.1f s; CPU %.2f s (%.1f%% of one core per second of audio); "
             "%d ducks, %d releases, %d timeouts, %d malformed requests, %d underruns",
             audio_s, stats.wall_s, stats.cpu_s, 100 * stats.cpu_s / max(audio_s, 1e-9), stats.ducks,
             stats.releases, stats.timeouts, rejected, stats.underruns)
    return EXIT_OK


__all__ = ["register", "run"]

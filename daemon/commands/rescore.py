"""``harkd rescore``: the cloud-side rescorer stub (a separate process; see :mod:`rescorer.service`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from daemon.config import Config, ConfigError, add_config_arguments, load_config
from daemon.mqtt import MqttError, MqttSettings, settings_from_config
from daemon.paths import default_model_dir
from daemon.systemd_notify import Notifier, setup_logging
from rescorer.arpa import ArpaError, read_arpa
from rescorer.rescore import Rescorer, RescoreWeights
from rescorer.service import DEFAULT_SESSION_EXPIRY_S, RescorerService

log = logging.getLogger(__name__)

EXIT_OK, EXIT_CONFIG, EXIT_START = 0, 1, 2
_STATUS_EVERY_S = 10.0  # how often the systemd STATUS= line is refreshed


def default_lm_path() -> Path:
    """``<models>/rescorer/lm.arpa`` ($HARKD_MODELS, /usr/share/harkd/models, or the source tree)."""
    return default_model_dir("rescorer") / "lm.arpa"


def register(sub: Any) -> None:
    defaults = RescoreWeights()
    parser = sub.add_parser(
        "rescore",
        help="run the rescorer: lattices in, language-model rescored results out (MQTT)",
        description=(
            "Run the cloud-side rescorer stub. It subscribes (QoS 1) to <prefix>/+/lattice, rescores the "
            "n-best list of every final lattice with a word n-gram language model (ARPA) and publishes the "
            "chosen words as a harkd.result/1 message on <prefix>/<device_id>/result. Each hypothesis scores "
            "acoustic + LM_WEIGHT * ln P_LM + WORD_BONUS * words: the device's context-bias bonus is removed "
            "and words outside the LM's vocabulary (names) count as its <unk> name class. Speculative "
            "lattices are skipped; malformed messages are logged and skipped. Broker settings (host, TLS, "
            "credentials, back-off) come from the mqtt: section of the configuration (no firmware profile "
            "unless --profile names one); the options below override them. Stops on SIGTERM or SIGINT."
        ),
        epilog="exit status: 0 stopped normally; 1 invalid configuration or options; 2 the LM or TLS files "
               "cannot be loaded",
    )
    add_config_arguments(parser)
    parser.add_argument("--host", default=None, metavar="HOST", help="MQTT broker host (instead of mqtt.host)")
    parser.add_argument("--port", type=int, default=None, metavar="PORT",
                        help="MQTT broker port (instead of mqtt.port)")
    parser.add_argument("--prefix", default=None, metavar="PREFIX",
                        help="topic prefix (instead of mqtt.prefix, normally 'harkd')")
    parser.add_argument("--client-id", default=None, metavar="ID",
                        help="MQTT client id (default harkd-rescorer-<device_id>; never the daemon's own)")
    parser.add_argument("--lm", type=Path, default=None, metavar="FILE",
                        help=f"ARPA language model (default {default_lm_path()})")
    parser.add_argument("--lm-weight", type=float, default=defaults.lm_weight, metavar="W",
                        help="weight of the LM's natural-log probability (default %(default)s)")
    parser.add_argument("--word-bonus", type=float, default=defaults.word_bonus, metavar="B",
                        help="score added per word, natural log (default %(default)s)")
    parser.add_argument("--session-expiry", type=int, default=DEFAULT_SESSION_EXPIRY_S, metavar="SECONDS",
                        help="MQTT 5: how long the broker keeps queuing lattices for us while we are away "
                             "(default %(default)s)")
    parser.set_defaults(func=run)


def load(args: argparse.Namespace) -> tuple[Config, MqttSettings]:
    """The configuration and the broker settings with the command-line overrides (ConfigError/MqttError)."""
    # The rescorer runs off the device: without --profile it uses no firmware profile (no detection).
    config = load_config(args.config, args.overrides, args.profile or "none")
    settings = settings_from_config(config)
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port), ("prefix", args.prefix))
                 if value is not None}
    return config, dataclasses.replace(settings, **overrides) if overrides else settings


def run(args: argparse.Namespace) -> int:
    notifier = Notifier()
    try:
        config, settings = load(args)
        weights = RescoreWeights(args.lm_weight, args.word_bonus)
        if args.session_expiry < 0:
            raise ValueError(f"--session-expiry must be >= 0, not {args.session_expiry}")
    except (ConfigError, MqttError, ValueError) as exc:
        print(f"harkd rescore: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging("DEBUG" if args.verbose > 1 else config.logging.level, config.logging.journald)
    lm_path = args.lm or default_lm_path()
    try:
        lm = read_arpa(lm_path)
        service = RescorerService(settings, Rescorer(lm, weights), client_id=args.client_id,
                                  session_expiry_s=args.session_expiry)
    except (ArpaError, MqttError) as exc:
        log.error("%s", exc)
        notifier.status(f"cannot start: {exc}")
        return EXIT_START
    counts = lm.counts()
    no_unk = "" if lm.has_unk else " (no <unk>: unknown words get a floor probability)"
    log.info("rescorer: language model %s: %s-gram, %s n-grams%s; lm_weight %g, word_bonus %g", lm_path, lm.order,
             "/".join(str(counts[n]) for n in sorted(counts)), no_unk, weights.lm_weight, weights.word_bonus)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("rescorer: received %s", signal.Signals(signum).name)
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    service.start()
    notifier.ready("started; connecting to the broker")
    try:
        while not stop.wait(_STATUS_EVERY_S):
            s = service.stats()
            notifier.status(f"{'connected' if s.connected else 'waiting for the broker'}; {s.received} lattices, "
                            f"{s.answered} results, {s.rejected} malformed, {s.failed} failed")
    finally:
        notifier.stopping("stopping")
        service.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return EXIT_OK


__all__ = ["default_lm_path", "load", "register"]

"""``harkd run``: the daemon itself (what the systemd unit starts)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from daemon.config import ConfigError, add_config_arguments, load_config_from_args
from daemon.service import EXIT_CONFIG, Service
from daemon.systemd_notify import Notifier, setup_logging


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "run",
        help="run the daemon: listen, recognise, publish lattices over MQTT",
        description=(
            "Run harkd: capture audio, start an utterance on the trigger (wake.engine), recognise it with "
            "the streaming recogniser, end-point it and publish speculative and final lattices, wake, "
            "reset, media/duck and metrics messages on MQTT. Under systemd (Type=notify) it reports "
            "READY=1, STATUS= and WATCHDOG=1. Stops on SIGTERM or SIGINT, or when an audio file "
            "(audio.source: file) has been played to the end."
        ),
        epilog=("exit status: 0 stopped normally; 1 the configuration is invalid; 2 start-up failed (models, "
                "audio file, outbox, TLS files); 3 the pipeline failed while running"),
    )
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    notifier = Notifier()
    try:
        config = load_config_from_args(args)
    except ConfigError as exc:
        print(f"harkd run: {exc}", file=sys.stderr)
        notifier.status("cannot start: the configuration is invalid (see the log)")
        return EXIT_CONFIG
    level = "DEBUG" if getattr(args, "verbose", 0) > 1 else config.logging.level
    setup_logging(level, config.logging.journald)
    logging.getLogger(__name__).debug("configuration layers: %s", ", ".join(config.sources))
    return Service(config, notifier=notifier).run()

"""The ``harkd`` command line: one sub-command per module in :mod:`daemon.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` to a callable
# taking the parsed namespace and returning the exit status.
COMMAND_MODULES = (
    "daemon.commands.transcribe",
    "daemon.commands.lattice_export",
    "daemon.commands.check_config",
    "daemon.commands.devices",
    "daemon.commands.run",
    "daemon.commands.contacts",
    "daemon.commands.wake",
    "daemon.commands.media_sim",
    "daemon.commands.rescore",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harkd",
        description="harkd: on-device speech daemon (wake word, streaming recogniser, lattices over MQTT).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())

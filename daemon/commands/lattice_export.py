"""``harkd lattice-export``: a published lattice (JSON) as HTK SLF or OpenFst text."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from daemon.lattice import Lattice, LatticeError

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "lattice-export",
        help="convert a lattice JSON (as published on MQTT) to HTK SLF or OpenFst text",
        description=(
            "Read a lattice as published on harkd/<device_id>/lattice and write it as HTK Standard Lattice "
            "Format (a= acoustic, l= context-bias log scores) or OpenFst text format (cost = -(acoustic + "
            "bias), word labels)."
        ),
    )
    parser.add_argument("lattice", metavar="LATTICE.json", help="the lattice JSON file ('-' for standard input)")
    parser.add_argument("--format", choices=("slf", "fst"), default="slf", help="output format (default: slf)")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of standard output")
    parser.add_argument(
        "--symbols", type=Path, help="with --format fst: also write the OpenFst symbol table to this file"
    )
    parser.add_argument(
        "--no-bias",
        action="store_true",
        help="with --format fst: leave the context-bias score out of the costs",
    )
    parser.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"harkd lattice-export: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    name = "<stdin>" if args.lattice == "-" else args.lattice
    if (args.symbols or args.no_bias) and args.format != "fst":
        return _fail("--symbols and --no-bias only apply to --format fst")
    try:
        data = sys.stdin.buffer.read() if args.lattice == "-" else Path(args.lattice).read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {name}: {exc.strerror or exc}")
    try:
        lattice = Lattice.from_json(data)
    except LatticeError as exc:
        return _fail(f"{name}: {exc}")
    if args.format == "slf":
        text = lattice.to_htk_slf()
    else:
        text = lattice.to_openfst_text(include_bias=not args.no_bias)
    try:
        if args.output is None:
            sys.stdout.write(text)
        else:
            args.output.write_text(text, encoding="utf-8")
        if args.symbols is not None:
            args.symbols.write_text(lattice.openfst_symbols_text(), encoding="utf-8")
    except OSError as exc:
        return _fail(f"cannot write: {exc}")
    logger.info("%s: %d nodes, %d arcs written as %s", name, len(lattice.nodes), len(lattice.arcs), args.format)
    return 0

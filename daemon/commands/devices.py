"""``harkd devices``: list the audio input devices PortAudio sees."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from daemon.audio import list_input_devices


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "devices",
        help="list audio input devices (index, name, channels, default rate)",
        description=(
            "List the input devices PortAudio sees. Put an index or a part of a name in audio.device "
            "(harkd.yaml) or pass --set audio.device=NAME. The default input device is marked with '*'."
        ),
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per device")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        devices = list_input_devices()
    except OSError as exc:  # the PortAudio library itself is missing
        print(f"harkd devices: PortAudio is not available: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for device in devices:
            print(json.dumps(asdict(device)))
        return 0
    if not devices:
        print("no input devices found", file=sys.stderr)
        return 1
    width = max(len(d.name) for d in devices)
    print(f"   {'index':>5}  {'name':<{width}}  {'channels':>8}  {'rate (Hz)':>9}  host API")
    for d in devices:
        mark = "*" if d.is_default else " "
        print(f" {mark} {d.index:>5}  {d.name:<{width}}  {d.channels:>8}  {d.default_rate:>9}  {d.host_api}")
    return 0

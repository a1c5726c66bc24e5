"""``harkd check-config``: print the effective configuration (secrets masked), or every error."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from daemon.config import Config, ConfigError, add_config_arguments, load_config_from_args
from daemon.profiles import ProfileError, load_profile


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "check-config",
        help="validate the configuration and print the effective settings",
        description=(
            "Load the configuration as the daemon would (packaged defaults, firmware profile, the config "
            "file, --set overrides), then print the effective settings with passwords masked. On errors, "
            "print every one with its key and a hint, and exit with status 1. Files and model "
            "directories that do not exist are reported as warnings (errors with --strict)."
        ),
    )
    add_config_arguments(parser, positional=True)
    parser.add_argument("--strict", action="store_true", help="treat missing files and directories as errors")
    parser.set_defaults(func=run)


def missing_paths(config: Config) -> list[str]:
    """Settings that name files or directories which are not there."""
    wanted: list[tuple[str, Path | None, bool]] = [
        ("wake.model", config.wake.model_path, True),
        ("recognizer.model", config.recognizer.model_path, True),
        ("audio.file", config.audio.file if config.audio.source == "file" else None, False),
        ("bias.file", config.bias.file, False),
        ("mqtt.tls.ca", config.mqtt.tls.ca, False),
        ("mqtt.tls.cert", config.mqtt.tls.cert, False),
        ("mqtt.tls.key", config.mqtt.tls.key, False),
    ]
    wanted += [(f"contacts.vcard_paths[{i}]", p, False) for i, p in enumerate(config.contacts.vcard_paths)]
    problems = []
    for key, path, is_dir in wanted:
        if path is None:
            continue
        if is_dir and not path.is_dir():
            problems.append(f"{key}: directory {path} does not exist")
        elif not is_dir and not path.exists():
            problems.append(f"{key}: {path} does not exist")
    return problems


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config_from_args(args)
    except ConfigError as exc:
        print(f"harkd check-config: {exc}", file=sys.stderr)
        return 1
    header = ["# harkd effective configuration (passwords masked)", "# layers, each over the one before:"]
    header += [f"#   {source}" for source in config.sources]
    if config.profile != "none":
        try:
            weight = load_profile(config.profile).cpu_weight
            header.append(f"# firmware profile {config.profile} suggests CPUWeight={weight} for harkd.slice")
        except ProfileError:
            pass  # it loaded a moment ago; a vanished file is not this command's business
    print("\n".join(header))
    print(config.dump(), end="")
    problems = missing_paths(config)
    for problem in problems:
        print(f"harkd check-config: {'error' if args.strict else 'warning'}: {problem}", file=sys.stderr)
    return 1 if problems and args.strict else 0

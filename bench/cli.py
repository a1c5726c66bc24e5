"""Argument types the benchmarks share: comma-separated lists of numbers or names."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection
from typing import TypeVar

Number = TypeVar("Number", int, float)


def number_list(kind: Callable[[str], Number], minimum: float, what: str) -> Callable[[str], list[Number]]:
    """An argparse type: comma-separated numbers of ``kind``, at least one, none below ``minimum``."""

    def parse(text: str) -> list[Number]:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"wants {what}, got {text!r}")
        return values

    return parse


def name_list(choices: Collection[str] = ()) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names (possibly none), each one of ``choices`` when they are given."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if choices and n not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)} (choose from {', '.join(choices)})")
        return names

    return parse

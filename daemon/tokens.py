"""The recogniser's token table: id 0 is blank, the rest are characters of the normalised alphabet."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BLANK = "<blank>"


@dataclass(frozen=True)
class TokenTable:
    tokens: tuple[str, ...]  # tokens[0] is BLANK

    @classmethod
    def from_alphabet(cls, alphabet: str) -> TokenTable:
        return cls((BLANK, *alphabet))

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read token list: {exc}") from exc
        if not isinstance(data, list) or not data or data[0] != BLANK or not all(
            isinstance(t, str) and len(t) == 1 for t in data[1:]
        ):
            raise ValueError(f"{path}: expected a JSON list starting with {BLANK!r} then single characters")
        return cls(tuple(data))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(list(self.tokens)) + "\n", encoding="utf-8")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def space_id(self) -> int:
        return self.tokens.index(" ")

    def encode(self, text: str) -> list[int]:
        index = {t: i for i, t in enumerate(self.tokens)}
        try:
            return [index[ch] for ch in text]
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the token table (normalise first)") from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.tokens[i] for i in ids if i != 0)

    def words(self, ids: Sequence[int]) -> list[str]:
        return self.decode(ids).split()

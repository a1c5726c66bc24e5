"""The recogniser's token table: id 0 is blank, the rest are characters of the normalised alphabet.

Normalised text (:mod:`daemon.textnorm`) spells an apostrophe only inside a word, between letters. The
table states that rule for the beam search (:meth:`TokenTable.forbidden_after`): an apostrophe never starts
a word or follows another, and a word never ends in one. The model never saw anything else in training, but
it can still spell it ("i' lock"), and the published words should read like the text it was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
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
        """The words spelled by ``ids``; an apostrophe left at a word's end (the utterance ended after it) is
        dropped."""
        return [w for w in (raw.strip("'") for raw in self.decode(ids).split()) if w]

    def forbidden_after(self, last: int) -> frozenset[int]:
        """Labels that may not follow label ``last`` (0, the blank, for "nothing yet"): an apostrophe after
        anything but a letter, and a space after an apostrophe."""
        return self._forbidden.get(last, frozenset())

    @cached_property
    def _forbidden(self) -> dict[int, frozenset[int]]:
        if "'" not in self.tokens:
            return {}
        apostrophe = self.tokens.index("'")
        letters = {i for i, t in enumerate(self.tokens) if t.isalpha()}
        rules = {i: frozenset({apostrophe}) for i in range(len(self.tokens)) if i not in letters}
        space = {self.space_id} if " " in self.tokens else set()
        rules[apostrophe] = frozenset({apostrophe, *space})
        return rules

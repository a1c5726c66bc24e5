"""The recogniser's vocabulary: a soft spelling prior for the beam search.

A character transducer spells what it hears, and where the acoustics are weak it spells words that do not
exist ("my likhts", "the gradden"). The recipe ships the words of its training text beside the model
(``vocabulary.txt``), and the beam search charges a penalty once per word that leaves them: at the first
label no known word continues with, or at the end of a word that is only the beginning of known ones. The
names of the bias list join the vocabulary for the streams that use it. The penalty is soft: a word the
model hears clearly is still spelled, whatever it is.

A state is an int: a node of the trie of the words' labels (:data:`ROOT` at a word start) or :data:`OFF`
once the word in progress has left the vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from daemon.tokens import TokenTable

ROOT = 0
OFF = -1


class Vocabulary:
    """An immutable trie of words over the labels of a token table."""

    def __init__(self, words: Iterable[str], tokens: TokenTable) -> None:
        self.tokens = tokens
        self._space = tokens.space_id
        self._index = {t: i for i, t in enumerate(tokens.tokens)}
        self._children: list[dict[int, int]] = [{}]
        self._terminal: list[bool] = [False]
        self._add(words)

    @classmethod
    def load(cls, path: Path, tokens: TokenTable) -> Vocabulary:
        """One word per line (normalised text); words with labels the table lacks are an error."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the vocabulary: {exc}") from exc
        try:
            return cls(text.split(), tokens)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def with_words(self, words: Iterable[str]) -> Vocabulary:
        """A copy with ``words`` added (a stream's bias list); words the token table cannot spell are skipped."""
        spellable = [w for w in words if all(c in self._index for c in w)]
        other = Vocabulary.__new__(Vocabulary)
        other.tokens, other._space, other._index = self.tokens, self._space, self._index
        other._children = [dict(c) for c in self._children]
        other._terminal = list(self._terminal)
        other._add(spellable)
        return other

    def _add(self, words: Iterable[str]) -> None:
        children, terminal = self._children, self._terminal
        for word in words:
            node = ROOT
            for ch in word:
                label = self._index.get(ch)
                if label is None or label == self._space:
                    raise ValueError(f"the word {word!r} has a character the token table lacks: {ch!r}")
                nxt = children[node].get(label)
                if nxt is None:
                    nxt = len(children)
                    children[node][label] = nxt
                    children.append({})
                    terminal.append(False)
                node = nxt
            if node != ROOT:
                terminal[node] = True

    def __len__(self) -> int:
        return sum(self._terminal)

    def advance(self, state: int, label: int) -> tuple[int, bool]:
        """The state after ``label``, and whether the word in progress left the vocabulary with it."""
        if label == self._space:
            return ROOT, self.unfinished(state)
        if state == OFF:
            return OFF, False
        nxt = self._children[state].get(label)
        return (OFF, True) if nxt is None else (nxt, False)

    def unfinished(self, state: int) -> bool:
        """Whether a word ending in ``state`` is only the beginning of known words."""
        return state > ROOT and not self._terminal[state]

    def words_outside(self, labels: Iterable[int]) -> int:
        """How many words of the label sequence ``labels`` the search charges the penalty for."""
        state, count = ROOT, 0
        for label in labels:
            state, left = self.advance(state, label)
            count += left
        return count + self.unfinished(state)

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str) or not word or any(c == " " or c not in self._index for c in word):
            return False
        return self.words_outside(self._index[c] for c in word) == 0

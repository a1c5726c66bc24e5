"""The recogniser's vocabulary: a soft spelling prior for the beam search.

A character transducer spells what it hears, and where the acoustics are weak it spells words that do not
exist ("my likhts", "the gradden"). The recipe ships the words of its training text beside the model
(``vocabulary.txt``), and the beam search charges a penalty once per word that leaves them: at the first
label no known word continues with, or at the end of a word that is only the beginning of known ones. The
names of the bias list join the vocabulary for the streams that use it. The penalty is soft: a word the
model hears clearly is still spelled, whatever it is.

A state is an int: a node of the trie of the words' labels (:data:`ROOT` at a word start) or :data:`OFF`
once the word in progress has left the vocabulary. The trie is stored flat, in breadth-first order: the
children of node ``n`` are the nodes ``p + 1`` for the positions ``p`` from ``offsets[n]`` to
``offsets[n + 1]`` of one string of their labels, so a step is one ``str.find``. For the shipped 12,527
words the trie takes 0.23 MB and the word list kept for :meth:`with_words` 0.8 MB (a dict per node took
8.6 MB).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from daemon.tokens import TokenTable
from daemon.weakcache import WeakCache

ROOT = 0
OFF = -1


class Vocabulary:
    """An immutable trie of words over the labels of a token table."""

    def __init__(self, words: Iterable[str], tokens: TokenTable) -> None:
        self.tokens = tokens
        self._space = tokens.space_id
        self._index = {t: i for i, t in enumerate(tokens.tokens)}
        self._words = tuple(sorted(set(words)))
        self._extended: WeakCache[Vocabulary] = WeakCache()
        for word in self._words:
            if not self._spellable(word):
                bad = [c for c in word if c not in self._index or c == " "]
                raise ValueError(f"the word {word!r} has a character the token table lacks: {bad[0]!r}"
                                 if bad else "an empty word")
        self._build()

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
        """A new vocabulary with ``words`` added (a stream's bias list); words the token table cannot spell
        are skipped."""
        return Vocabulary((*self._words, *filter(self._spellable, words)), self.tokens)

    def with_words_of(self, owner: object, words: Callable[[], Iterable[str]]) -> Vocabulary:
        """:meth:`with_words` of ``words()``, built once per ``owner`` (a bias list) while it lives."""
        return self._extended.get(owner, lambda: self.with_words(words()))

    def _spellable(self, word: str) -> bool:
        """Whether ``word`` is one word the token table can spell."""
        return bool(word) and all(c != " " and c in self._index for c in word)

    def _build(self) -> None:
        """The flat breadth-first trie, level by level: the nodes of depth d are the distinct d-letter
        beginnings of words in sorted order, so the children of each node are contiguous in the next level."""
        labels: list[str] = []
        offsets = array("i", [0])
        terminal = bytearray([0])
        words = set(self._words)
        level = [""]
        while level:
            deeper = sorted({w[: len(level[0]) + 1] for w in self._words if len(w) > len(level[0])})
            children = Counter(p[:-1] for p in deeper)
            for parent in level:
                offsets.append(offsets[-1] + children.get(parent, 0))
            labels += (chr(self._index[p[-1]]) for p in deeper)
            terminal += bytes(p in words for p in deeper)
            level = deeper
        self._labels = "".join(labels)
        self._offsets = offsets
        self._terminal = bytes(terminal)

    def __len__(self) -> int:
        return len(self._words)

    def advance(self, state: int, label: int) -> tuple[int, bool]:
        """The state after ``label``, and whether the word in progress left the vocabulary with it."""
        if label == self._space:
            return ROOT, self.unfinished(state)
        if state == OFF:
            return OFF, False
        at = self._labels.find(chr(label), self._offsets[state], self._offsets[state + 1])
        return (OFF, True) if at < 0 else (at + 1, False)

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
        if not isinstance(word, str) or not self._spellable(word):
            return False
        return self.words_outside(self._index[c] for c in word) == 0

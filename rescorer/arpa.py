"""A word n-gram language model in the ARPA back-off format: read, write, query.

ARPA is the plain-text format SRILM, KenLM, Kaldi and CMU Sphinx read and write. Each n-gram line holds
``log10 P(w | h)``, the words, and (for n-grams that are also contexts) a back-off weight ``log10 bow(h w)``.
The probability of a word after a history is the stored one when the n-gram is listed, else the back-off
weight of the history times the probability after the history shortened by its first word::

    P(w | h) = P*(h w)                   if "h w" is listed
             = bow(h) * P(w | h[1:])     otherwise (bow(h) = 1 when h is not listed)

``<s>`` starts a sentence (a context only: its probability is written as -99), ``</s>`` ends it, and
``<unk>`` stands for every word that is not in the vocabulary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

__all__ = [
    "BOS",
    "EOS",
    "UNK",
    "ArpaError",
    "NgramLM",
    "parse_arpa",
    "read_arpa",
    "save_arpa",
    "write_arpa",
]

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
#: log10 probability written for ``<s>``, which is never predicted (the usual convention).
BOS_LOG10 = -99.0
#: log10 probability of a word outside the vocabulary when the model has no ``<unk>`` (another tool's model).
OOV_FLOOR_LOG10 = -7.0

Ngram = tuple[str, ...]

_COUNT_RE = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION_RE = re.compile(r"^\\(\d+)-grams:$")


class ArpaError(ValueError):
    """A file that is not a well-formed ARPA language model; the message says where."""


@dataclass(frozen=True)
class NgramLM:
    """An n-gram model: ``probs[ngram]`` is log10 P*, ``backoffs[ngram]`` log10 bow (absent means 0)."""

    order: int
    probs: Mapping[Ngram, float]
    backoffs: Mapping[Ngram, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.order < 1:
            raise ArpaError(f"an n-gram model has order 1 or more, not {self.order}")
        for ngram in self.probs:
            if not 1 <= len(ngram) <= self.order:
                raise ArpaError(f"n-gram {' '.join(ngram)!r} is longer than the model order {self.order}")
            if len(ngram) > 1 and ngram[:-1] not in self.probs:
                raise ArpaError(f"n-gram {' '.join(ngram)!r} is listed but its context {' '.join(ngram[:-1])!r} is not")
        for ngram in self.backoffs:
            if ngram not in self.probs:
                raise ArpaError(f"back-off weight for {' '.join(ngram)!r}, which is not listed")

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every word with a unigram (``<s>``, ``</s>`` and ``<unk>`` included when listed)."""
        return frozenset(ngram[0] for ngram in self.probs if len(ngram) == 1)

    @property
    def has_unk(self) -> bool:
        return (UNK,) in self.probs

    def counts(self) -> dict[int, int]:
        """How many n-grams of each order are listed: ``{1: ..., 2: ..., 3: ...}``."""
        out = dict.fromkeys(range(1, self.order + 1), 0)
        for ngram in self.probs:
            out[len(ngram)] += 1
        return out

    def map_word(self, word: str) -> str:
        """The word itself when it is in the vocabulary, else ``<unk>``."""
        return word if (word,) in self.probs else UNK

    def log10_prob(self, word: str, history: Sequence[str]) -> float:
        """log10 P(word | history); both already mapped (:meth:`map_word`); only the last order-1 words count."""
        context = tuple(history[len(history) - self.order + 1 :]) if self.order > 1 else ()
        backoff = 0.0
        while True:
            prob = self.probs.get((*context, word))
            if prob is not None:
                return backoff + prob
            if not context:
                return backoff + OOV_FLOOR_LOG10  # only for a word missing even as a unigram (no <unk>)
            backoff += self.backoffs.get(context, 0.0)
            context = context[1:]

    def sentence_log10(self, words: Iterable[str], *, eos: bool = True) -> float:
        """log10 P(words) for a whole sentence: starts after ``<s>``, ends with ``</s>`` unless ``eos`` is off."""
        history = [BOS]
        total = 0.0
        for word in words:
            mapped = self.map_word(word)
            total += self.log10_prob(mapped, history)
            history.append(mapped)
        if eos:
            total += self.log10_prob(EOS, history)
        return total

    def sentence_ln(self, words: Iterable[str], *, eos: bool = True) -> float:
        """:meth:`sentence_log10` in natural log (the unit of the lattice scores)."""
        return self.sentence_log10(words, eos=eos) * math.log(10.0)


# ------------------------------------------------------------------------------------------------ writing


def _number(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _sorted_ngrams(lm: NgramLM, n: int) -> list[Ngram]:
    return sorted(ngram for ngram in lm.probs if len(ngram) == n)


def write_arpa(lm: NgramLM, out: TextIO, *, header: Sequence[str] = ()) -> None:
    """Write ``lm`` in ARPA format (n-grams sorted, log values with six decimals).

    ``header`` lines are written first as ``# `` comments, before ``\\data\\``: readers skip text there
    (KenLM only when it starts with ``#``).
    """
    for line in header:
        out.write(f"# {line}\n")
    if header:
        out.write("\n")
    counts = lm.counts()
    out.write("\\data\\\n")
    for n in range(1, lm.order + 1):
        out.write(f"ngram {n}={counts[n]}\n")
    for n in range(1, lm.order + 1):
        out.write(f"\n\\{n}-grams:\n")
        for ngram in _sorted_ngrams(lm, n):
            line = f"{_number(lm.probs[ngram])}\t{' '.join(ngram)}"
            backoff = lm.backoffs.get(ngram)
            if backoff is not None and n < lm.order:
                line += f"\t{_number(backoff)}"
            out.write(line + "\n")
    out.write("\n\\end\\\n")


def save_arpa(lm: NgramLM, path: Path, *, header: Sequence[str] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as out:
        write_arpa(lm, out, header=header)
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------ reading


def _lines(source: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(source, start=1):
        yield number, raw.strip()


def _float(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArpaError(f"{where}: {text!r} is not a number") from None
    if math.isnan(value) or value > 0.0:
        raise ArpaError(f"{where}: {text!r} is not a log10 probability or weight (must be <= 0)")
    return value


def parse_arpa(source: Iterable[str], name: str = "<arpa>") -> NgramLM:
    """Parse ARPA text (an iterable of lines); :class:`ArpaError` with the line number on any problem."""
    lines = _lines(source)
    declared: dict[int, int] = {}
    for _number, line in lines:  # skip the free text before \data\
        if line == "\\data\\":
            break
    else:
        raise ArpaError(f"{name}: no \\data\\ section")
    section = 0
    probs: dict[Ngram, float] = {}
    backoffs: dict[Ngram, float] = {}
    seen: dict[int, int] = {}
    for number, line in lines:
        where = f"{name}:{number}"
        if not line:
            continue
        if section == 0:
            count = _COUNT_RE.match(line)
            if count:
                declared[int(count[1])] = int(count[2])
                continue
        header = _SECTION_RE.match(line)
        if header:
            section = int(header[1])
            if section not in declared:
                raise ArpaError(f"{where}: {section}-grams section without an 'ngram {section}=' count")
            seen[section] = 0
            continue
        if line == "\\end\\":
            break
        if section == 0:
            raise ArpaError(f"{where}: expected 'ngram N=COUNT' or a '\\N-grams:' header, got {line!r}")
        fields = line.split()
        if len(fields) not in (section + 1, section + 2):
            raise ArpaError(f"{where}: a {section}-gram line is 'log10prob w1 .. w{section} [backoff]', got {line!r}")
        ngram = tuple(fields[1 : section + 1])
        if ngram in probs:
            raise ArpaError(f"{where}: {' '.join(ngram)!r} is listed twice")
        probs[ngram] = _float(fields[0], where) if ngram != (BOS,) else BOS_LOG10
        if len(fields) == section + 2:
            backoffs[ngram] = _float_backoff(fields[-1], where)
        seen[section] += 1
    else:
        raise ArpaError(f"{name}: no \\end\\ line")
    if not declared:
        raise ArpaError(f"{name}: no 'ngram N=COUNT' lines")
    order = max(declared)
    for n in range(1, order + 1):
        if declared.get(n, 0) != seen.get(n, 0):
            raise ArpaError(f"{name}: 'ngram {n}={declared.get(n, 0)}' but {seen.get(n, 0)} {n}-grams are listed")
    return NgramLM(order, probs, backoffs)


def _float_backoff(text: str, where: str) -> float:
    # Back-off weights are log10 of a factor that may exceed 1 in pruned models; only NaN is refused.
    try:
        value = float(text)
    except ValueError:
        raise ArpaError(f"{where}: back-off weight {text!r} is not a number") from None
    if math.isnan(value) or math.isinf(value):
        raise ArpaError(f"{where}: back-off weight {text!r} is not finite")
    return value


def read_arpa(path: Path) -> NgramLM:
    """Read an ARPA file (UTF-8)."""
    try:
        with path.open(encoding="utf-8") as source:
            return parse_arpa(source, str(path))
    except OSError as exc:
        raise ArpaError(f"cannot read the language model {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ArpaError(f"{path}: not UTF-8 text: {exc}") from exc

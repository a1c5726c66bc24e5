"""Estimate an interpolated absolute-discounting word n-gram model from tokenised sentences.

For an n-gram ``h w`` seen ``c(h w)`` times, with ``c(h)`` the count of ``h`` as a context and ``N1+(h)`` the
number of distinct words seen after it::

    P(w | h) = max(c(h w) - D_n, 0) / c(h)  +  D_n * N1+(h) / c(h) * P(w | h[1:])

(Ney, Essen and Kneser 1994), with one discount per order from the count-of-counts, ``D_n = n1 / (n1 + 2 n2)``
(``n1``/``n2``: how many n-grams of that order were seen once/twice). Unigrams are maximum likelihood over the
vocabulary: every vocabulary word is seen, and words outside it are mapped to ``<unk>`` beforehand, so
``<unk>`` has its own count. The model is written in back-off form (:class:`~rescorer.arpa.NgramLM`): each
listed n-gram keeps its interpolated probability and each context gets the back-off weight that makes its
distribution sum to one, so every ARPA reader computes the same probabilities as the formula above.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rescorer.arpa import BOS, BOS_LOG10, EOS, Ngram, NgramLM

__all__ = ["Estimate", "discount", "estimate"]

_FALLBACK_DISCOUNT = 0.5  # when an order has no singletons or no doubletons to estimate D from


@dataclass(frozen=True)
class Estimate:
    """The model and what went into it."""

    lm: NgramLM
    discounts: tuple[float, ...]  # D_n for n = 2 .. order
    sentences: int
    tokens: int  # words predicted, </s> included


def discount(counts: Counter[Ngram]) -> float:
    """``n1 / (n1 + 2 n2)`` from the count-of-counts, within (0, 1)."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    if n1 == 0 or n2 == 0:
        return _FALLBACK_DISCOUNT
    return n1 / (n1 + 2 * n2)


def _count(sentences: Iterable[Sequence[str]], order: int) -> tuple[list[Counter[Ngram]], int]:
    counts: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    n_sentences = 0
    for words in sentences:
        if any(w in (BOS, EOS) or not w or any(c.isspace() for c in w) for w in words):
            raise ValueError(f"sentence {' '.join(words)!r}: words must be non-empty, without spaces, <s> or </s>")
        tokens = (BOS, *words, EOS)
        n_sentences += 1
        for n in range(1, order + 1):
            first = 1 if n == 1 else 0  # <s> is a context, never predicted
            for i in range(first, len(tokens) - n + 1):
                counts[n - 1][tokens[i : i + n]] += 1
    return counts, n_sentences


def estimate(sentences: Iterable[Sequence[str]], order: int = 3, *, min_count: int = 1) -> Estimate:
    """The interpolated model of ``order`` from word sequences (no ``<s>``/``</s>``; those are added).

    ``min_count``: n-grams of the highest order seen fewer times are left out of the file (their probability
    then comes through the back-off weight; the model still sums to one). Lower orders are all kept.
    """
    if order < 1:
        raise ValueError(f"order must be at least 1, not {order}")
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, not {min_count}")
    counts, n_sentences = _count(sentences, order)
    if n_sentences == 0:
        raise ValueError("no sentences to estimate a language model from")

    probs: dict[Ngram, float] = {}  # natural probabilities while estimating; log10 at the end
    total = sum(counts[0].values())
    for ngram, c in counts[0].items():
        probs[ngram] = c / total

    discounts: list[float] = []
    for n in range(2, order + 1):
        d = discount(counts[n - 1])
        discounts.append(d)
        context_total: dict[Ngram, int] = defaultdict(int)
        context_types: dict[Ngram, int] = defaultdict(int)
        for ngram, c in counts[n - 1].items():
            context_total[ngram[:-1]] += c
            context_types[ngram[:-1]] += 1
        for ngram, c in counts[n - 1].items():
            if n == order and c < min_count:
                continue
            h = ngram[:-1]
            lower = probs[ngram[1:]]  # a suffix of a seen n-gram was seen too
            probs[ngram] = (c - d) / context_total[h] + d * context_types[h] / context_total[h] * lower

    backoffs = _backoff_weights(probs, order)
    log_probs = {ngram: math.log10(p) for ngram, p in probs.items()}
    log_probs[(BOS,)] = BOS_LOG10
    lm = NgramLM(order, log_probs, backoffs)
    return Estimate(lm, tuple(discounts), n_sentences, total)


def _backoff_weights(probs: dict[Ngram, float], order: int) -> dict[Ngram, float]:
    """log10 bow(h) = log10 (1 - sum P(w|h)) / (1 - sum P(w|h[1:])) over the words listed after h."""
    listed: dict[Ngram, list[Ngram]] = defaultdict(list)
    for ngram in probs:
        if len(ngram) > 1:
            listed[ngram[:-1]].append(ngram)
    if order > 1:
        listed.setdefault((BOS,), [])
    backoffs: dict[Ngram, float] = {}
    for h, ngrams in listed.items():
        if (h not in probs and h != (BOS,)) or len(h) >= order:
            continue
        left = 1.0 - sum(probs[g] for g in ngrams)
        left_lower = 1.0 - sum(probs[g[1:]] for g in ngrams)
        if left <= 0.0 or left_lower <= 0.0:  # no mass to give away (cannot happen with D > 0)
            backoffs[h] = 0.0
            continue
        backoffs[h] = math.log10(left / left_lower)
    return backoffs

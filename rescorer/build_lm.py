"""Build the rescorer's language model from the in-domain command corpus: ``python -m rescorer.build_lm``.

The sentences come from :func:`training.text_corpus.generate` (training split only; the held-out names and
appliances never reach the model). Every word of a contact name is replaced by ``<unk>`` before counting:
``<unk>`` is the *name class*. Names are open-ended (the user's contacts are not known to the cloud), so the
model learns where a name goes ("call <unk>", "<unk> <unk>", "turn on <unk> lamp") and not which names it
happened to see. At rescoring time any word outside the vocabulary is scored as ``<unk>``, seen or unseen
names alike: a correctly recognised name the model never saw costs exactly what a seen one costs, and is not
replaced by an in-vocabulary word just because it is unknown. Name words that are also ordinary words
("will", "rose", "may") stay words.

Writes a trigram ARPA file (interpolated absolute discounting, :mod:`rescorer.estimate`) and prints its size
and n-gram counts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from rescorer.arpa import UNK, save_arpa
from rescorer.estimate import Estimate, estimate

__all__ = ["DEFAULT_OUT", "NameClassMapper", "UtteranceLike", "build", "describe", "main"]

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("models/rescorer/lm.arpa")
DEFAULT_SENTENCES = 20000
DEFAULT_SEED = 0
DEFAULT_ORDER = 3


class _Span(Protocol):
    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


class UtteranceLike(Protocol):
    """What is needed of :class:`training.text_corpus.Utterance`: its text and its mentions' spans."""

    @property
    def text(self) -> str: ...

    @property
    def entities(self) -> Sequence[_Span]: ...


def _base(word: str) -> str:
    return word[:-2] if word.endswith("'s") else word


class NameClassMapper:
    """Maps the words of contact names in corpus sentences to ``<unk>``.

    A word is a name word when it (without a possessive ``'s``) is a word of a training name entry, lies in
    a contact or appliance mention ("maria's lamp"), and never occurs outside a mention in the corpus
    (which keeps template words such as "will" or "may").
    """

    def __init__(self, name_words: Iterable[str], common_words: Iterable[str]) -> None:
        self.name_words = frozenset(name_words) - frozenset(common_words)

    @classmethod
    def for_utterances(cls, utterances: Iterable[UtteranceLike], train_names: Iterable[str]) -> NameClassMapper:
        """Common words are those of the utterances outside any mention; name words those of ``train_names``."""
        common: set[str] = set()
        for utterance in utterances:
            for word, inside in _words_with_spans(utterance):
                if not inside:
                    common.add(_base(word))
        names = {w for name in train_names for w in name.split()}
        return cls(names, common)

    def map(self, utterance: UtteranceLike) -> list[str]:
        return [UNK if inside and _base(w) in self.name_words else w for w, inside in _words_with_spans(utterance)]


def _words_with_spans(utterance: UtteranceLike) -> list[tuple[str, bool]]:
    """(word, whether it overlaps an entity mention) for each word of the utterance."""
    spans = [(e.start, e.end) for e in utterance.entities]
    out: list[tuple[str, bool]] = []
    position = 0
    for word in utterance.text.split(" "):
        start, end = position, position + len(word)
        position = end + 1
        if word:
            out.append((word, any(s < end and start < e for s, e in spans)))
    return out


def build(n_sentences: int = DEFAULT_SENTENCES, seed: int = DEFAULT_SEED, order: int = DEFAULT_ORDER,
          min_count: int = 1) -> Estimate:
    """Generate the training sentences, map names to ``<unk>`` and estimate the model."""
    from training.text_corpus import corpus_split, generate  # the corpus lives with the training recipes

    utterances = generate(n_sentences, "train", seed)
    mapper = NameClassMapper.for_utterances(utterances, corpus_split().train_names)
    return estimate((mapper.map(u) for u in utterances), order, min_count=min_count)


def describe(result: Estimate, path: Path | None = None) -> str:
    counts = result.lm.counts()
    parts = [f"{n}-grams: {counts[n]}" for n in sorted(counts)]
    size = f", {path.stat().st_size} bytes" if path is not None and path.exists() else ""
    discounts = ", ".join(f"D{n + 2}={d:.3f}" for n, d in enumerate(result.discounts))
    return (f"{result.sentences} sentences, {result.tokens} tokens, vocabulary {counts[1]} (with <s>, </s>, <unk>); "
            f"{'; '.join(parts)}; {discounts}{size}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rescorer.build_lm",
        description="Build the rescorer's word trigram language model (ARPA) from the training split of the "
                    "in-domain command corpus. Contact names become the <unk> class.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="ARPA file to write (default %(default)s)")
    parser.add_argument("-n", "--sentences", type=int, default=DEFAULT_SENTENCES,
                        help="training sentences to generate (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="corpus seed (default %(default)s)")
    parser.add_argument("--order", type=int, default=DEFAULT_ORDER, help="n-gram order (default %(default)s)")
    parser.add_argument("--min-count", type=int, default=1,
                        help="leave out highest-order n-grams seen fewer times (default %(default)s: keep all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.sentences < 1 or args.order < 1 or args.min_count < 1:
        parser.error("--sentences, --order and --min-count must be at least 1")
    result = build(args.sentences, args.seed, args.order, args.min_count)
    header = [
        f"harkd rescorer language model: {args.order}-gram, interpolated absolute discounting",
        f"built by: python -m rescorer.build_lm --out {args.out} --sentences {args.sentences} --seed {args.seed} "
        f"--order {args.order} --min-count {args.min_count}",
        "from the training split of training.text_corpus; contact-name words are the <unk> class",
    ]
    save_arpa(result.lm, args.out, header=header)
    print(f"wrote {args.out}: {describe(result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

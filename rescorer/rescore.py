"""Rescoring a lattice's n-best list with a word n-gram language model (pure: no MQTT, no clock).

Each hypothesis gets::

    total = acoustic + lm_weight * ln P_LM(words </s>) + word_bonus * len(words)

The acoustic score is the n-best entry's ``acoustic_score`` alone: the device's context-bias bonus
(``bias_score``) is left out, because it is a search aid that kept rare names in the beam, not evidence. The
LM takes its place, with every out-of-vocabulary word scored as the ``<unk>`` name class (see
:mod:`rescorer.build_lm`), so a name the device recognised is not penalised for being unknown. The word bonus
offsets the LM's preference for fewer words. Scores are natural logs, like the lattice's.

A final lattice without an n-best list is rescored over the paths of its word graph (acoustic score: the
sum of its arcs' acoustic parts). Speculative lattices are not answered: the final one follows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.lattice import EPSILON, Lattice
from daemon.messages import Result
from rescorer.arpa import NgramLM

__all__ = ["RESULT_SOURCE", "RescoreWeights", "Rescorer", "Scored"]

#: ``source`` of the results the rescorer publishes.
RESULT_SOURCE = "rescorer"


@dataclass(frozen=True)
class RescoreWeights:
    # Chosen on half of the held-out test utterances (clean, music and noise at 10 dB) and checked on the
    # other half by `python -m bench.rescorer --conditions clean,noise_10db,music_10db`: 1.3-1.7 WER points
    # below the device's best words, where 0.5 and 0.5 were 0.1-0.7 points above.
    lm_weight: float = 0.25  # multiplies the LM's natural-log probability
    word_bonus: float = 1.0  # added per word (natural-log units)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lm_weight) and self.lm_weight >= 0.0):
            raise ValueError(f"lm_weight must be a finite number >= 0, not {self.lm_weight!r}")
        if not math.isfinite(self.word_bonus):
            raise ValueError(f"word_bonus must be a finite number, not {self.word_bonus!r}")


@dataclass(frozen=True)
class Scored:
    """One hypothesis with its rescoring terms."""

    text: str
    acoustic: float  # acoustic log score, bias removed
    lm: float  # natural-log LM probability of the words and </s>
    total: float  # acoustic + lm_weight * lm + word_bonus * words


class Rescorer:
    """Holds the language model and the weights; :meth:`result_for` turns a lattice into a result."""

    def __init__(self, lm: NgramLM, weights: RescoreWeights | None = None) -> None:
        self.lm = lm
        self.weights = weights or RescoreWeights()

    def score(self, text: str, acoustic: float) -> Scored:
        words = text.split()
        lm = self.lm.sentence_ln(words)
        total = acoustic + self.weights.lm_weight * lm + self.weights.word_bonus * len(words)
        return Scored(text, acoustic, lm, total)

    def rescore(self, lattice: Lattice) -> list[Scored]:
        """Every candidate of the lattice, best first (ties keep the lattice's order)."""
        scored = [self.score(text, acoustic) for text, acoustic in _candidates(lattice)]
        return sorted(scored, key=lambda s: -s.total)

    def result_for(self, lattice: Lattice) -> Result | None:
        """The result for a final lattice; None for a speculative one. An empty lattice gives empty text."""
        if lattice.kind != "final":
            return None
        ranked = self.rescore(lattice)
        best = ranked[0] if ranked else None
        return Result(
            utterance_id=lattice.utterance_id,
            text=best.text if best else "",
            device_id=lattice.device_id,
            seq=lattice.seq,
            kind=lattice.kind,
            score=round(best.total, 6) if best else None,
            source=RESULT_SOURCE,
        )


def _candidates(lattice: Lattice) -> Sequence[tuple[str, float]]:
    """(text, acoustic score) of each n-best entry, or of each word-graph path when there is no n-best list."""
    if lattice.nbest:
        return [(entry.text, entry.acoustic_score) for entry in lattice.nbest]
    out = []
    for path in lattice.paths():
        words = [arc.word for arc in path if arc.word != EPSILON]
        out.append((" ".join(words), sum(arc.acoustic_score for arc in path)))
    return out

"""One recognition hypothesis: what the recogniser reports and what lattices are built from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hypothesis:
    text: str  # normalised words separated by single spaces
    tokens: tuple[int, ...]  # token ids (characters)
    token_frames: tuple[int, ...]  # encoder frame at which each token was emitted
    # Log probability from the model: of the search's path (or of the few it merged) with the search's
    # penalties for words outside the model's vocabulary (daemon.vocabulary), or, once a name substitution
    # has been verified (daemon.bias_verify), the forward log-likelihood over all alignments. Within one
    # n-best they are always of the same kind.
    acoustic_score: float
    bias_score: float  # bonus added by context biasing (0.0 without biasing)
    # Per label: its log probability when emitted (less a vocabulary penalty charged at it), and the bias
    # bonus it earned (blank probabilities, the penalty for an unfinished last word and a final withdrawal
    # of unfinished bias credit are in the totals only).
    token_acoustic_scores: tuple[float, ...] = ()
    token_bias_scores: tuple[float, ...] = ()

    @property
    def score(self) -> float:
        return self.acoustic_score + self.bias_score

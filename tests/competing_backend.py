"""A transducer backend for tests of biasing: two transcripts compete and the acoustics prefer one a little."""

from __future__ import annotations

import numpy as np

from daemon.recognizer import FloatArray
from daemon.textnorm import ALPHABET
from daemon.tokens import TokenTable

TOKENS = TokenTable.from_alphabet(ALPHABET)


class CompetingBackend:
    """Frame ``t`` offers character ``t`` of each transcript whose spelling the hypothesis has followed so
    far: ``favoured`` at logit 8, ``other`` at ``8 - margin`` (the acoustics slightly prefer ``favoured``).
    The predictor state is an id for the hypothesis' whole prefix, so the joiner knows what it spelt."""

    chunk_features = 6
    frame_shift_s = 0.06

    def __init__(self, favoured: str, other: str, margin: float) -> None:
        self.options = ((favoured, 8.0), (other, 8.0 - margin))
        self.frames = max(len(favoured), len(other)) + 1
        self.frame = -1
        self.prefixes: list[str] = [""]
        self.ids: dict[tuple[int, int], int] = {}

    def initial_encoder_state(self) -> FloatArray:
        return np.zeros(1, dtype=np.float32)

    def encode(self, feats: FloatArray, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        self.frame += 1
        return np.array([[float(self.frame)]], dtype=np.float32), state

    def initial_predictor_state(self) -> tuple[FloatArray, FloatArray]:
        return np.zeros(1, dtype=np.float32), np.zeros(1, dtype=np.float32)

    def predict(self, token: int, h: FloatArray, c: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        parent = int(h[0])
        if token == 0:
            return h.copy(), h, c
        key = (parent, token)
        if key not in self.ids:
            self.ids[key] = len(self.prefixes)
            self.prefixes.append(self.prefixes[parent] + TOKENS.tokens[token])
        new = np.array([float(self.ids[key])], dtype=np.float32)
        return new, new, c

    def join(self, enc: FloatArray, preds: FloatArray) -> FloatArray:
        frame = int(enc[0])
        logits = np.full((len(preds), len(TOKENS)), -8.0, dtype=np.float32)
        for i, pred in enumerate(preds):
            prefix = self.prefixes[int(pred[0])]
            logits[i, 0] = 8.0  # blank, unless the prefix follows a transcript whose next label is due
            followed = [(text, logit) for text, logit in self.options if text.startswith(prefix)]
            for text, logit in followed:
                if len(prefix) == frame and frame < len(text):
                    k = TOKENS.encode(text[frame])[0]
                    logits[i, k] = max(logits[i, k], logit)
                    logits[i, 0] = 4.0  # skipping a due label costs about 4 nats
            for text, logit in followed:
                if text == prefix:  # this transcript is complete: blank from here on, at its own score
                    logits[i, 0] = max(logits[i, 0], logit)
        return logits

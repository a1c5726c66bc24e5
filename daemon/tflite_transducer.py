"""The RNN-T's three TFLite graphs behind :class:`daemon.recognizer.TransducerBackend`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daemon.modelcard import ModelCard, ModelError
from daemon.recognizer import FloatArray
from daemon.tflite import ENCODER_FILE, JOINER_FILE, PREDICTOR_FILE, Graph, TFLiteError


class TfliteTransducer:
    def __init__(self, model_dir: Path, card: ModelCard, threads: int = 1) -> None:
        try:
            self.encoder = Graph(model_dir / ENCODER_FILE, threads)
            self.predictor = Graph(model_dir / PREDICTOR_FILE, threads)
            self.joiner = Graph(model_dir / JOINER_FILE, threads)
        except (TFLiteError, ValueError) as exc:
            raise ModelError(str(exc)) from exc
        try:
            self.chunk_features = int(card.model["chunk_features"])
            self.frame_shift_s = float(card.model["frame_shift_s"])
            self._pred_dim = int(card.model["pred_dim"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{model_dir}: model card lacks model.{exc}") from exc
        self._state_shape = self.encoder.input_shape("state")
        # The joiner is always called with this many rows (padded) so the interpreter never re-allocates.
        self._join_rows = max(1, self.joiner.input_shape("pred")[0])

    def initial_encoder_state(self) -> FloatArray:
        return np.zeros(self._state_shape, dtype=np.float32)

    def encode(self, feats: FloatArray, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        out = self.encoder.run(feats=feats[None].astype(np.float32), state=state)
        return out["enc"][0], out["state_out"]

    def initial_predictor_state(self) -> tuple[FloatArray, FloatArray]:
        zeros = np.zeros((1, self._pred_dim), dtype=np.float32)
        return zeros, zeros.copy()

    def predict(self, token: int, h: FloatArray, c: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        out = self.predictor.run(token=np.array([token], dtype=np.int32), h=h, c=c)
        return out["pred"][0], out["h_out"], out["c_out"]

    def join(self, enc: FloatArray, preds: FloatArray) -> FloatArray:
        n = len(preds)
        rows = max(n, self._join_rows)
        self._join_rows = rows
        padded = np.zeros((rows, preds.shape[1]), dtype=np.float32)
        padded[:n] = preds
        logits = self.joiner.run(enc=np.broadcast_to(enc, padded.shape).copy(), pred=padded)["logits"]
        return logits[:n]

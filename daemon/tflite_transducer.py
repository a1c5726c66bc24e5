"""The RNN-T's three TFLite graphs behind :class:`daemon.recognizer.TransducerBackend`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daemon.modelcard import ModelCard, ModelError
from daemon.recognizer import FloatArray
from daemon.tflite import ENCODER_FILE, JOINER_FILE, PREDICTOR_FILE, Graph, TFLiteError

# Joiner batches above BULK_JOIN_ROWS rows (whole hypotheses scored at once: daemon.bias_verify) run on joiners
# of their own, so the one the beam search calls keeps its small size (a joiner runs every batch at the largest
# size it was given): in chunks of BULK_CHUNK_ROWS, the last one padded to a multiple of BULK_STEP_ROWS, one
# joiner per size (eight at most), each allocated once.
BULK_JOIN_ROWS = 32
BULK_CHUNK_ROWS = 512
BULK_STEP_ROWS = 64


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
        self._joiner_path = model_dir / JOINER_FILE
        self._threads = threads
        self._bulk_joiners: dict[int, tuple[Graph, tuple[FloatArray, FloatArray]]] = {}  # by rows, with inputs

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
        if n > max(BULK_JOIN_ROWS, self._join_rows):
            return self._join_bulk(np.broadcast_to(enc, preds.shape), preds)
        rows = max(n, self._join_rows)
        self._join_rows = rows
        padded = np.zeros((rows, preds.shape[1]), dtype=np.float32)
        padded[:n] = preds
        logits = self.joiner.run(enc=np.broadcast_to(enc, padded.shape).copy(), pred=padded)["logits"]
        return logits[:n]

    def _join_bulk(self, enc: FloatArray, preds: FloatArray) -> FloatArray:
        """The joiner on each row pair of (N, joint_dim) encoder frames and predictor outputs, on the bulk joiners."""
        out = []
        for start in range(0, len(preds), BULK_CHUNK_ROWS):
            n = min(len(preds) - start, BULK_CHUNK_ROWS)
            rows = -(-n // BULK_STEP_ROWS) * BULK_STEP_ROWS
            bulk = self._bulk_joiners.get(rows)
            if bulk is None:
                inputs = (np.zeros((rows, enc.shape[1]), dtype=np.float32),
                          np.zeros((rows, preds.shape[1]), dtype=np.float32))
                bulk = self._bulk_joiners[rows] = (Graph(self._joiner_path, self._threads), inputs)
            joiner, (enc_in, pred_in) = bulk
            enc_in[:n] = enc[start : start + n]  # rows past n keep old values: their outputs are dropped
            pred_in[:n] = preds[start : start + n]
            out.append(joiner.run(enc=enc_in, pred=pred_in)["logits"][:n])
        return np.concatenate(out)

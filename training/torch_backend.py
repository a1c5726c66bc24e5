"""The float PyTorch model behind the runtime's :class:`daemon.recognizer.TransducerBackend` protocol.

Used to decode with the trained model before export, so the exported graphs can be compared with it on
the same utterances through the same beam search.
"""

from __future__ import annotations

import numpy as np
import torch

from daemon.recognizer import FloatArray
from training.model import Transducer


class TorchTransducer:
    def __init__(self, model: Transducer) -> None:
        self.model = model.eval()
        cfg = model.cfg
        self.chunk_features = cfg.chunk_features
        self.frame_shift_s = 0.01 * cfg.subsampling

    def initial_encoder_state(self) -> FloatArray:
        return self.model.encoder.initial_state().numpy()

    @torch.no_grad()
    def encode(self, feats: FloatArray, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        enc, new_state = self.model.encoder(torch.from_numpy(feats)[None], torch.from_numpy(state))
        return enc[0].numpy(), new_state.numpy()

    def initial_predictor_state(self) -> tuple[FloatArray, FloatArray]:
        zeros = np.zeros((1, self.model.cfg.pred_dim), dtype=np.float32)
        return zeros, zeros.copy()

    @torch.no_grad()
    def predict(self, token: int, h: FloatArray, c: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        out, h2, c2 = self.model.predictor.step(
            torch.tensor([token]), torch.from_numpy(h), torch.from_numpy(c)
        )
        return out[0].numpy(), h2.numpy(), c2.numpy()

    @torch.no_grad()
    def join(self, enc: FloatArray, preds: FloatArray) -> FloatArray:
        return self.model.joiner(torch.from_numpy(enc)[None], torch.from_numpy(preds)).numpy()

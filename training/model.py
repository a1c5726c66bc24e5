"""The RNN-T: a causal convolutional streaming encoder, an LSTM predictor and an additive joiner.

Encoder (streaming, explicit state):
  log-mel (10 ms) -> normalise -> stack 3 frames (30 ms) -> linear -> ``blocks_low`` conv blocks
  -> stack 2 frames (60 ms) -> linear -> ``blocks_high`` conv blocks -> linear to the joiner dimension.
  A conv block is pre-LayerNorm -> causal depthwise conv (kernel ``kernel``) -> pointwise expand -> ReLU ->
  pointwise project, with a residual connection. Causal convolutions only look back, so a chunk of audio can
  be encoded given the last ``kernel - 1`` inputs of every block: that is the whole streaming state, a tensor
  of shape (1, n_blocks, kernel - 1, dim). Training runs whole utterances with zero left padding, which is
  exactly streaming from a zero state.
Predictor: token embedding -> one LSTM layer -> linear to the joiner dimension (start token = blank).
Joiner: tanh(encoder + predictor) -> linear to the vocabulary (blank = 0).
With ``mean_norm_frames`` set, the features are first mean-normalised as they stream
(:class:`daemon.frontend.RunningMeanNorm`, in numpy outside the graphs, in training and on the device alike).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from daemon.frontend import MeanNormConfig


@dataclass(frozen=True)
class ModelConfig:
    n_mels: int = 40
    vocab_size: int = 29  # blank + 28 characters
    # Encoder width. 256 was tried (training/configs/recognizer.yaml otherwise as shipped, 80 min, 13,968
    # steps against 16,182): held-out WER, all five conditions, 31.5% against 31.6%, entity accuracy 25.0%
    # against 25.9%, fit to its own training utterances 10.2% against 11.1%, 3.2 MB against 2.2 MB. What holds
    # the model back on new voices is not its width.
    dim: int = 192
    kernel: int = 5  # depthwise conv kernel (frames)
    blocks_low: int = 2  # blocks at 30 ms
    blocks_high: int = 6  # blocks at 60 ms
    expand: int = 2  # pointwise expansion factor
    embed_dim: int = 128
    # Predictor LSTM width. training/configs/recognizer.yaml sets 128: a step 0.88x the time of 256 (python -m
    # bench.train_step --widths 5 --precisions bfloat16 --pred-dims 256,128 --batches 20), and a weaker
    # character language model, which the held-out voices favour (as with train.history_noise). Measured (the
    # seventh recipe, 55 min each, same data): held-out WER, all five conditions, 36.75% against 38.26%, in
    # 13,933 steps against 11,965; fit to its own training sentences 17.5% against 15.9%.
    pred_dim: int = 256  # LSTM hidden size
    joint_dim: int = 256
    stack_low: int = 3  # feature frames per low-rate frame
    stack_high: int = 2  # low-rate frames per encoder frame
    chunk_frames: int = 4  # encoder frames per streaming chunk
    mean_norm_frames: int = 0  # time constant of daemon.frontend.MeanNormConfig (frames); 0: no normalisation

    @property
    def subsampling(self) -> int:
        return self.stack_low * self.stack_high

    @property
    def chunk_features(self) -> int:
        return self.chunk_frames * self.subsampling

    @property
    def n_blocks(self) -> int:
        return self.blocks_low + self.blocks_high

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> ModelConfig:
        return cls(**{k: int(v) for k, v in data.items()})


class ConvBlock(nn.Module):
    def __init__(self, dim: int, kernel: int, expand: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.expand = nn.Linear(dim, dim * expand)
        self.project = nn.Linear(dim * expand, dim)

    def forward(self, x: torch.Tensor, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D); history: (B, K-1, D) normalised inputs before x. Returns (out, new history)."""
        y = torch.cat([history, self.norm(x)], dim=1)
        new_history = y[:, -(self.depthwise.kernel_size[0] - 1) :, :]
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
        y = self.project(F.relu(self.expand(y)))
        return x + y, new_history


def stack_frames(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T, D) -> (B, T // k, k * D); T must be a multiple of k."""
    b, t, d = x.shape
    return x.reshape(b, t // k, k * d)


class Encoder(nn.Module):
    feat_mean: torch.Tensor  # (n_mels,) buffer set from the training data
    feat_inv_std: torch.Tensor  # (n_mels,)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_inv_std", torch.ones(cfg.n_mels))
        self.input_low = nn.Linear(cfg.n_mels * cfg.stack_low, cfg.dim)
        self.low = nn.ModuleList(ConvBlock(cfg.dim, cfg.kernel, cfg.expand) for _ in range(cfg.blocks_low))
        self.input_high = nn.Linear(cfg.dim * cfg.stack_high, cfg.dim)
        self.high = nn.ModuleList(ConvBlock(cfg.dim, cfg.kernel, cfg.expand) for _ in range(cfg.blocks_high))
        self.output = nn.Linear(cfg.dim, cfg.joint_dim)

    def initial_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.cfg.n_blocks, self.cfg.kernel - 1, self.cfg.dim)

    def forward(self, feats: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats: (B, T, n_mels) with T a multiple of the subsampling; state: (B, n_blocks, K-1, D).

        Returns encoder frames (B, T // subsampling, joint_dim) and the new state.
        """
        x = (feats - self.feat_mean) * self.feat_inv_std
        x = F.relu(self.input_low(stack_frames(x, self.cfg.stack_low)))
        histories = []
        blocks = list(self.low) + list(self.high)
        for i, block in enumerate(blocks):
            if i == self.cfg.blocks_low:
                x = F.relu(self.input_high(stack_frames(x, self.cfg.stack_high)))
            x, h = block(x, state[:, i])
            histories.append(h)
        return self.output(x), torch.stack(histories, dim=1)


class Predictor(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.pred_dim, batch_first=True)
        self.output = nn.Linear(cfg.pred_dim, cfg.joint_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Training: tokens (B, U) -> (B, U + 1, joint_dim), position 0 conditioned on the start token."""
        start = torch.zeros(tokens.shape[0], 1, dtype=tokens.dtype, device=tokens.device)
        y, _ = self.lstm(self.embed(torch.cat([start, tokens], dim=1)))
        return self.output(y)

    def step(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One step with explicit state, written with plain linear algebra so it converts to TFLite.

        token: (N,) int; h, c: (N, pred_dim). Returns (out (N, joint_dim), h, c).
        """
        x = self.embed(token)
        w_ih, b_ih, w_hh, b_hh = (
            cast(torch.Tensor, getattr(self.lstm, name))
            for name in ("weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0")
        )
        gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return self.output(h), h, c


class Joiner(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.output = nn.Linear(cfg.joint_dim, cfg.vocab_size)

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return self.output(torch.tanh(enc + pred))


class Transducer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.predictor = Predictor(cfg)
        self.joiner = Joiner(cfg)

    def mean_norm(self) -> MeanNormConfig | None:
        """The streaming mean normalisation the model was trained with, starting from the feature mean."""
        if self.cfg.mean_norm_frames <= 0:
            return None
        mean = cast(torch.Tensor, self.encoder.feat_mean).detach().cpu().numpy()
        return MeanNormConfig(float(self.cfg.mean_norm_frames), tuple(float(v) for v in mean))

    def joint_logits(self, feats: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels), (B, U) -> logits (B, T // subsampling, U + 1, vocab)."""
        enc, _ = self.encoder(feats, self.encoder.initial_state(feats.shape[0]))
        pred = self.predictor(tokens)
        return self.joiner(enc.unsqueeze(2), pred.unsqueeze(1))

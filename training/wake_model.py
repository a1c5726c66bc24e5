"""The wake-word model: a small temporal-convolution network over ~1.3 s of log-mel, its training and export.

Architecture (TC-ResNet style, 1-D convolutions over time with the mel bands as channels): feature
normalisation (training mean and deviation, inside the graph), a strided stem convolution, residual
depthwise-separable blocks (depthwise temporal convolution + pointwise mixing, batch norm, ReLU; some
strided), average pooling over time and one linear output. About 30 k weights and under 2 M
multiply-adds per window: scored every 40 ms it costs a few milliseconds of CPU per second of audio.

Training samples windows from the stored scene features (:mod:`training.wake_data`): windows ending just
after the phrase are positive, windows ending before its last syllable ("hey jar...") and every window of
a negative scene are negative. Windows reaching before a scene's start are filled with the front end's
value for digital silence, as the device's ring is at the start of a stream. Twice during training (at
``mine_at``) the model scores every negative scene's windows and the ones it finds hardest (the likeliest
false accepts: "hey charvis", a "jarvis" inside another sentence, a burst of music) become a share of the
negatives of every later batch (hard-negative mining).

The recipe may train several members from different seeds (``train.members``, :func:`train_members`);
export (:func:`export_tflite`) folds each member's batch norms into its convolutions, averages the
members' logits in one graph (:class:`WakeGraph`) and converts it to a static int8 TFLite graph (PT2E,
calibrated on training windows) with float input ``feats`` (1, window, n_mels) and output ``score``
(1, 1), the probability. The daemon cannot tell one member from several: it loads one graph.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

log = logging.getLogger(__name__)

FILL_VALUE = float(np.log(np.float32(1e-6)))  # log-mel of digital silence (the front end's log floor)


@dataclass(frozen=True)
class WakeModelConfig:
    n_mels: int = 40
    window_frames: int = 128  # 10 ms frames the model sees (1.28 s)
    stride_frames: int = 4  # the device scores the window every this many frames (40 ms)
    channels: int = 64
    stem_kernel: int = 5
    stem_stride: int = 2
    kernel: int = 9  # depthwise kernel of every block
    block_strides: tuple[int, ...] = (1, 2, 1, 2, 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["block_strides"] = list(self.block_strides)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WakeModelConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown wake model setting(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if "block_strides" in values:
            values["block_strides"] = tuple(int(s) for s in values["block_strides"])
        return cls(**values)


class ConvBN(nn.Module):
    """Conv1d without bias + BatchNorm1d; :meth:`fold` gives the single Conv1d used for export."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, groups=groups, padding=padding, bias=False)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fold(self) -> nn.Conv1d:
        conv, bn = self.conv, self.bn
        var = bn.running_var if bn.running_var is not None else torch.ones(conv.out_channels)
        mean = bn.running_mean if bn.running_mean is not None else torch.zeros(conv.out_channels)
        scale = bn.weight / torch.sqrt(var + bn.eps)
        folded = nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size[0], stride=conv.stride[0],
                           groups=conv.groups, padding=self.padding, bias=True)
        with torch.no_grad():
            folded.weight = nn.Parameter(conv.weight * scale[:, None, None])
            folded.bias = nn.Parameter(bn.bias - mean * scale)
        return folded


class Block(nn.Module):
    """Depthwise temporal conv ("same" padding) -> pointwise conv, each with batch norm, plus the input
    (subsampled by the stride) as a residual."""

    def __init__(self, channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"the depthwise kernel must be odd, not {kernel}")
        self.stride = stride
        self.depthwise = ConvBN(channels, channels, kernel, stride, groups=channels, padding=kernel // 2)
        self.pointwise = ConvBN(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(torch.relu(self.depthwise(x)))
        return torch.relu(y + x[:, :, :: self.stride])


class WakeNet(nn.Module):
    feat_mean: torch.Tensor  # buffers
    feat_inv_std: torch.Tensor

    def __init__(self, cfg: WakeModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_inv_std", torch.ones(cfg.n_mels))
        self.stem = ConvBN(cfg.n_mels, cfg.channels, cfg.stem_kernel, cfg.stem_stride)
        self.blocks = nn.ModuleList(Block(cfg.channels, cfg.kernel, s) for s in cfg.block_strides)
        self.head = nn.Linear(cfg.channels, 1)
        if (cfg.window_frames - cfg.stem_kernel) // cfg.stem_stride + 1 < 1:
            raise ValueError(f"window_frames {cfg.window_frames} is shorter than the stem convolution")

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, T, n_mels) -> logits (B,)."""
        x = ((feats - self.feat_mean) * self.feat_inv_std).transpose(1, 2)
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=2))[:, 0]

    def set_feature_stats(self, mean: npt.NDArray[np.float32], std: npt.NDArray[np.float32]) -> None:
        with torch.no_grad():
            self.feat_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            self.feat_inv_std.copy_(torch.from_numpy((1.0 / np.maximum(std, 1e-3)).astype(np.float32)))


class _FoldedBlock(nn.Module):
    def __init__(self, block: Block) -> None:
        super().__init__()
        self.stride = block.stride
        self.depthwise = block.depthwise.fold()
        self.pointwise = block.pointwise.fold()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(torch.relu(self.depthwise(x)))
        return torch.relu(y + x[:, :, :: self.stride])


class _FoldedNet(nn.Module):
    """One trained :class:`WakeNet` with its batch norms folded; gives logits."""

    feat_mean: torch.Tensor  # buffers
    feat_inv_std: torch.Tensor

    def __init__(self, model: WakeNet) -> None:
        super().__init__()
        self.register_buffer("feat_mean", model.feat_mean.detach().clone())
        self.register_buffer("feat_inv_std", model.feat_inv_std.detach().clone())
        self.stem = model.stem.fold()
        self.blocks = nn.ModuleList(_FoldedBlock(b) for b in model.blocks if isinstance(b, Block))
        self.head = model.head

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = ((feats - self.feat_mean) * self.feat_inv_std).transpose(1, 2)
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=2))[:, 0]


class WakeGraph(nn.Module):
    """The exported graph: each member's batch norms folded, the members' logits averaged; named input
    ``feats``, output ``score`` (probability). One member is one model; several, trained from different
    seeds, make an ensemble (see :func:`train_members`)."""

    def __init__(self, members: Sequence[WakeNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a wake graph needs at least one trained model")
        self.members = nn.ModuleList(_FoldedNet(m) for m in members)

    def forward(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = torch.stack([member(feats) for member in self.members]).mean(dim=0)
        return {"score": torch.sigmoid(logits)[:, None]}


# --------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class WakeTrainConfig:
    steps: int = 6000
    batch_size: int = 128
    lr: float = 3e-3  # peak learning rate (one-cycle schedule)
    weight_decay: float = 1e-3
    positive_share: float = 0.3  # of each batch: windows ending just after the phrase
    partial_share: float = 0.1  # windows ending before the phrase is complete (negatives)
    label_frames: tuple[int, int] = (-2, 24)  # window ends, relative to the phrase's end frame, that are positive
    partial_frames: tuple[int, int] = (-70, -18)  # ... that are incomplete phrases (negative)
    negative_weights: dict[str, float] = field(default_factory=lambda: {
        "command": 1.0, "general": 1.0, "confusable": 2.0, "real": 1.0, "music": 1.0, "noise": 0.5, "silence": 0.3})
    positive_weight: float = 1.0  # loss weight of positive windows
    mine_at: tuple[float, ...] = (0.4, 0.7)  # progress points at which hard negatives are mined (see below)
    hard_share: float = 0.3  # share of the negative windows drawn from the mined hard negatives
    mine_stride: int = 8  # frames between the negative windows scored when mining
    mine_min_score: float = 0.02  # a negative window scoring at least this is a hard negative
    mine_max: int = 40000  # the hardest this many are kept
    freq_mask: int = 6  # widest band of mel channels masked (SpecAugment), 0: none
    time_mask: int = 15  # longest run of frames masked, 0: none
    time_budget_min: float = 20.0  # CPU minutes per thread (wall-clock minutes on idle cores) of each member;
    # its training ends, annealed, when this runs out
    members: int = 1  # models trained from seeds seed, seed + 1, ...; the exported graph averages their logits
    threads: int = 2
    log_every: int = 200

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label_frames"] = list(self.label_frames)
        data["partial_frames"] = list(self.partial_frames)
        data["mine_at"] = list(self.mine_at)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WakeTrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown wake training setting(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        for key in ("label_frames", "partial_frames"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        if "mine_at" in values:
            values["mine_at"] = tuple(float(v) for v in values["mine_at"])
        if "negative_weights" in values:
            values["negative_weights"] = {**cls().negative_weights, **values["negative_weights"]}
        return cls(**values)


@dataclass(frozen=True)
class SceneFeatures:
    """Features of many scenes in one array; ``ends`` is the phrase's end frame (-1 for negatives)."""

    feats: npt.NDArray[np.float16]  # (frames, n_mels)
    offsets: npt.NDArray[np.int64]  # (scenes + 1,)
    kinds: npt.NDArray[np.str_]  # (scenes,) "positive" or a negative kind
    ends: npt.NDArray[np.int64]  # (scenes,)

    def __len__(self) -> int:
        return len(self.kinds)

    def save(self, path: Path) -> None:
        np.savez(path, feats=self.feats, offsets=self.offsets, kinds=self.kinds, ends=self.ends)

    @classmethod
    def load(cls, path: Path) -> SceneFeatures:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["feats"], z["offsets"], z["kinds"], z["ends"])

    @classmethod
    def build(cls, items: list[tuple[str, npt.NDArray[np.float32], int]]) -> SceneFeatures:
        lengths = [len(f) for _, f, _ in items]
        return cls(
            feats=np.concatenate([f for _, f, _ in items]).astype(np.float16),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            kinds=np.array([k for k, _, _ in items]),
            ends=np.array([e for _, _, e in items], dtype=np.int64),
        )

    def window(self, scene: int, end: int, size: int, fill: float) -> npt.NDArray[np.float32]:
        """Frames ``end - size + 1 .. end`` of a scene, filled with ``fill`` outside it."""
        lo, hi = int(self.offsets[scene]), int(self.offsets[scene + 1])
        out = np.full((size, self.feats.shape[1]), fill, dtype=np.float32)
        first = end - size + 1
        a, b = max(first, 0), min(end + 1, hi - lo)
        if b > a:
            out[a - first : b - first] = self.feats[lo + a : lo + b]
        return out


class WindowSampler:
    """Draws labelled training windows from :class:`SceneFeatures` (see the module docstring)."""

    def __init__(self, data: SceneFeatures, model_cfg: WakeModelConfig, cfg: WakeTrainConfig,
                 rng: np.random.Generator) -> None:
        self.data, self.model_cfg, self.cfg, self.rng = data, model_cfg, cfg, rng
        self.positives = np.flatnonzero(data.kinds == "positive")
        self.negatives: dict[str, npt.NDArray[np.int64]] = {}
        for kind in np.unique(data.kinds):
            if kind != "positive" and cfg.negative_weights.get(str(kind), 0.0) > 0:
                self.negatives[str(kind)] = np.flatnonzero(data.kinds == kind)
        if not len(self.positives) or not self.negatives:
            raise ValueError("training needs positive and negative scenes")
        weights = np.array([cfg.negative_weights[k] for k in self.negatives])
        self._neg_p = weights / weights.sum()
        self._neg_kinds = list(self.negatives)
        self.hard: npt.NDArray[np.int64] = np.zeros((0, 2), dtype=np.int64)  # (scene, end) of hard negatives

    def _scene_frames(self, scene: int) -> int:
        return int(self.data.offsets[scene + 1] - self.data.offsets[scene])

    def batch(self, size: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        cfg, w = self.cfg, self.model_cfg.window_frames
        n_pos = round(size * cfg.positive_share)
        n_part = round(size * cfg.partial_share)
        xs = np.empty((size, w, self.model_cfg.n_mels), dtype=np.float32)
        ys = np.zeros(size, dtype=np.float32)
        for i in range(size):
            if i < n_pos + n_part:
                scene = int(self.rng.choice(self.positives))
                lo, hi = cfg.label_frames if i < n_pos else cfg.partial_frames
                end = int(self.data.ends[scene]) + int(self.rng.integers(lo, hi + 1))
                end = min(max(end, 0), self._scene_frames(scene) - 1)
                ys[i] = 1.0 if i < n_pos else 0.0
            elif len(self.hard) and self.rng.random() < cfg.hard_share:
                scene, end = (int(v) for v in self.hard[int(self.rng.integers(len(self.hard)))])
                end = min(max(end + int(self.rng.integers(-2, 3)), 0), self._scene_frames(scene) - 1)
            else:
                kind = self._neg_kinds[int(self.rng.choice(len(self._neg_kinds), p=self._neg_p))]
                scene = int(self.rng.choice(self.negatives[kind]))
                end = int(self.rng.integers(0, self._scene_frames(scene)))
            xs[i] = self.data.window(scene, end, w, FILL_VALUE)
        self._spec_augment(xs)
        return xs, ys

    def _spec_augment(self, xs: npt.NDArray[np.float32]) -> None:
        cfg = self.cfg
        for x in xs:
            if cfg.freq_mask > 0 and self.rng.random() < 0.5:
                width = int(self.rng.integers(1, cfg.freq_mask + 1))
                start = int(self.rng.integers(0, x.shape[1] - width + 1))
                x[:, start : start + width] = x.mean()
            if cfg.time_mask > 0 and self.rng.random() < 0.3:
                width = int(self.rng.integers(1, cfg.time_mask + 1))
                start = int(self.rng.integers(0, x.shape[0] - width + 1))
                x[start : start + width] = x.mean()


def mine_hard_negatives(model: WakeNet, data: SceneFeatures, sampler: WindowSampler, cfg: WakeTrainConfig,
                        batch: int = 1024) -> npt.NDArray[np.int64]:
    """(scene, end) of the negative-scene windows the model scores highest (at least ``mine_min_score``),
    every ``mine_stride`` frames, the hardest ``mine_max`` of them."""
    w = model.cfg.window_frames
    scenes = np.concatenate(list(sampler.negatives.values()))
    found: list[tuple[float, int, int]] = []
    pending: list[npt.NDArray[np.float32]] = []
    where: list[tuple[int, int]] = []

    def flush() -> None:
        probs = float_scores([model], np.stack(pending))
        found.extend((float(p), sc, e) for p, (sc, e) in zip(probs, where, strict=True) if p >= cfg.mine_min_score)
        pending.clear()
        where.clear()

    was_training = model.training
    model.eval()
    for scene in scenes:
        lo, hi = int(data.offsets[scene]), int(data.offsets[scene + 1])
        padded = np.concatenate([np.full((w - 1, data.feats.shape[1]), FILL_VALUE, np.float32),
                                 data.feats[lo:hi].astype(np.float32)])
        views = np.lib.stride_tricks.sliding_window_view(padded, (w, padded.shape[1]))[:, 0]
        for end in range(cfg.mine_stride - 1, hi - lo, cfg.mine_stride):
            pending.append(views[end])
            where.append((int(scene), end))
            if len(pending) >= batch:
                flush()
    if pending:
        flush()
    model.train(was_training)
    found.sort(reverse=True)
    kept = found[: cfg.mine_max]
    log.info("hard negatives: %d windows of negative scenes score >= %.2f (%d kept)", len(found),
             cfg.mine_min_score, len(kept))
    return np.array([(sc, e) for _, sc, e in kept], dtype=np.int64).reshape(-1, 2)


def feature_stats(data: SceneFeatures, rng: np.random.Generator, frames: int = 200_000
                  ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    picks = rng.integers(0, len(data.feats), size=min(frames, len(data.feats)))
    sample = data.feats[np.sort(picks)].astype(np.float32)
    return sample.mean(axis=0), sample.std(axis=0)


def train(data: SceneFeatures, model_cfg: WakeModelConfig, cfg: WakeTrainConfig, out_dir: Path,
          seed: int = 0) -> WakeNet:
    """Train and write ``out_dir/final.pt`` (state dict) and ``out_dir/config.json``; returns the model."""
    torch.manual_seed(seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng([seed, 5])
    model = WakeNet(model_cfg)
    model.set_feature_stats(*feature_stats(data, rng))
    sampler = WindowSampler(data, model_cfg, cfg, rng)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cpu_started = time.process_time()
    budget = cfg.time_budget_min * 60.0
    losses: list[float] = []
    model.train()
    step = 0
    mined = 0
    for step in range(1, cfg.steps + 1):
        # Progress is steps done or time spent, whichever is further along, so a run cut by the time budget
        # still ends with its learning rate annealed. Time is CPU time per thread: on idle cores it is wall
        # time, and a shared or paused machine gets the same model, only later.
        spent = (time.process_time() - cpu_started) / cfg.threads
        progress = max((step - 1) / cfg.steps, spent / budget)
        if progress >= 1.0:
            log.warning("time budget of %.1f min spent: stopping at step %d of %d", cfg.time_budget_min, step - 1,
                        cfg.steps)
            step -= 1
            break
        if mined < len(cfg.mine_at) and progress >= cfg.mine_at[mined]:
            sampler.hard = mine_hard_negatives(model, data, sampler, cfg)
            mined += 1
        for group in optimiser.param_groups:
            group["lr"] = cfg.lr * learning_rate_factor(progress)
        xs, ys = sampler.batch(cfg.batch_size)
        logits = model(torch.from_numpy(xs))
        target = torch.from_numpy(ys)
        weight = torch.where(target > 0.5, cfg.positive_weight, 1.0)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weight)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.info("step %d/%d loss %.4f lr %.5f (%.0f s)", step, cfg.steps,
                     float(np.mean(losses[-cfg.log_every:])), optimiser.param_groups[0]["lr"],
                     time.monotonic() - started)
    model.eval()
    torch.save(model.state_dict(), out_dir / "final.pt")
    info = {"model": model_cfg.to_dict(), "train": cfg.to_dict(), "steps_done": step,
            "seconds": round(time.monotonic() - started, 1),
            "cpu_seconds": round(time.process_time() - cpu_started, 1),  # all threads; the machine may be shared
            "final_loss": float(np.mean(losses[-100:]))}
    (out_dir / "config.json").write_text(json.dumps(info, indent=1) + "\n")
    return model


def train_members(data: SceneFeatures, model_cfg: WakeModelConfig, cfg: WakeTrainConfig, out_dir: Path,
                  seed: int = 0) -> list[WakeNet]:
    """Train ``cfg.members`` models from seeds ``seed, seed + 1, ...`` into ``out_dir/member-<i>``.

    Averaging the logits of independently trained members (:class:`WakeGraph`) smooths out what one
    training run happened to learn: on the shipped recipe's test set two members miss fewer phrases at
    every threshold than either alone, for twice the (small) CPU time.
    """
    if cfg.members < 1:
        raise ValueError(f"members must be at least 1, not {cfg.members}")
    models = []
    for i in range(cfg.members):
        log.info("training member %d of %d (seed %d)", i + 1, cfg.members, seed + i)
        models.append(train(data, model_cfg, cfg, out_dir / f"member-{i}", seed=seed + i))
    return models


def member_dirs(out_dir: Path) -> list[Path]:
    """The ``member-<i>`` checkpoint directories under ``out_dir``, in order."""
    found = sorted(out_dir.glob("member-*"), key=lambda d: int(d.name.split("-", 1)[1]))
    if not found:
        raise FileNotFoundError(f"no trained members (member-0, ...) in {out_dir}")
    return found


def learning_rate_factor(progress: float, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of training, then a cosine down to zero."""
    if progress < warmup:
        return 0.05 + 0.95 * progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / (1.0 - warmup))))


def load_model(out_dir: Path) -> WakeNet:
    info = json.loads((out_dir / "config.json").read_text())
    model = WakeNet(WakeModelConfig.from_dict(info["model"]))
    model.load_state_dict(torch.load(out_dir / "final.pt", weights_only=True))
    model.eval()
    return model


def load_members(out_dir: Path) -> list[WakeNet]:
    """Every trained member under ``out_dir`` (see :func:`train_members`), in order."""
    return [load_model(d) for d in member_dirs(out_dir)]


def float_scores(members: Sequence[WakeNet], windows: npt.NDArray[np.float32], batch: int = 256
                 ) -> npt.NDArray[np.float32]:
    """Probabilities of the float members (their logits averaged, as :class:`WakeGraph`) for windows
    (N, T, n_mels)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            feats = torch.from_numpy(windows[i : i + batch])
            logits = torch.stack([m(feats) for m in members]).mean(dim=0)
            out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def export_tflite(members: Sequence[WakeNet], calibration: npt.NDArray[np.float32], out_path: Path) -> Path:
    """Static int8 TFLite of the folded graph, calibrated on ``calibration`` windows (N, T, n_mels)."""
    from training.export import _convert_static_int8

    graph = WakeGraph(members).eval()
    cfg = members[0].cfg
    sample = {"feats": torch.zeros(1, cfg.window_frames, cfg.n_mels)}
    inputs = [{"feats": torch.from_numpy(w[None].astype(np.float32))} for w in calibration]
    return _convert_static_int8(graph, sample, inputs, out_path)


def macs_per_window(cfg: WakeModelConfig) -> int:
    """Multiply-adds of one scoring (convolutions and the output layer)."""
    length = (cfg.window_frames - cfg.stem_kernel) // cfg.stem_stride + 1
    total = length * cfg.n_mels * cfg.channels * cfg.stem_kernel
    for s in cfg.block_strides:
        length = (length - 1) // s + 1
        total += length * cfg.channels * (cfg.kernel + cfg.channels)
    return total + cfg.channels


def parameter_count(model: nn.Module) -> int:
    return sum(int(math.prod(p.shape)) for p in model.parameters())

"""Feature shards: many utterances' log-mel features and token ids in one .npz (no pickle), plus batching."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch


@dataclass(frozen=True)
class FeatureShard:
    feats: npt.NDArray[np.float16]  # (total frames, n_mels)
    feat_offsets: npt.NDArray[np.int64]  # (n + 1,)
    tokens: npt.NDArray[np.int16]  # (total tokens,)
    token_offsets: npt.NDArray[np.int64]  # (n + 1,)

    def __len__(self) -> int:
        return len(self.feat_offsets) - 1

    def utterance(self, i: int) -> tuple[npt.NDArray[np.float16], npt.NDArray[np.int16]]:
        f0, f1 = self.feat_offsets[i], self.feat_offsets[i + 1]
        t0, t1 = self.token_offsets[i], self.token_offsets[i + 1]
        return self.feats[f0:f1], self.tokens[t0:t1]

    def num_frames(self) -> npt.NDArray[np.int64]:
        return np.diff(self.feat_offsets)

    @classmethod
    def build(cls, items: Sequence[tuple[np.ndarray, Sequence[int] | np.ndarray]]) -> FeatureShard:
        feats = [np.asarray(f, dtype=np.float16) for f, _ in items]
        toks = [np.asarray(t, dtype=np.int16) for _, t in items]
        return cls(
            feats=np.concatenate(feats) if feats else np.zeros((0, 40), np.float16),
            feat_offsets=np.concatenate([[0], np.cumsum([len(f) for f in feats])]).astype(np.int64),
            tokens=np.concatenate(toks) if toks else np.zeros(0, np.int16),
            token_offsets=np.concatenate([[0], np.cumsum([len(t) for t in toks])]).astype(np.int64),
        )

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, feats=self.feats, feat_offsets=self.feat_offsets, tokens=self.tokens,
                 token_offsets=self.token_offsets)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FeatureShard:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["feats"], z["feat_offsets"], z["tokens"], z["token_offsets"])

    @classmethod
    def concat(cls, shards: Sequence[FeatureShard]) -> FeatureShard:
        items = [s.utterance(i) for s in shards for i in range(len(s))]
        return cls.build(items)


@dataclass(frozen=True)
class Batch:
    feats: torch.Tensor  # (B, T, n_mels), T a multiple of the subsampling
    feat_lengths: torch.Tensor  # (B,) encoder frames
    tokens: torch.Tensor  # (B, U) int64, padded with 0
    token_lengths: torch.Tensor  # (B,)


def make_batch(shard: FeatureShard, indices: Sequence[int], subsampling: int) -> Batch:
    pairs = [shard.utterance(i) for i in indices]
    enc_lengths = [len(f) // subsampling for f, _ in pairs]
    frames = max(enc_lengths) * subsampling
    n_mels = shard.feats.shape[1]
    feats = np.zeros((len(pairs), frames, n_mels), dtype=np.float32)
    tokens = np.zeros((len(pairs), max(len(t) for _, t in pairs)), dtype=np.int64)
    for b, (f, t) in enumerate(pairs):
        n = enc_lengths[b] * subsampling
        feats[b, :n] = f[:n]
        # Padding frames repeat the quietest value so they look like silence, not like a loud constant.
        feats[b, n:] = f.min(axis=0) if len(f) else 0.0
        tokens[b, : len(t)] = t
    return Batch(
        feats=torch.from_numpy(feats),
        feat_lengths=torch.tensor(enc_lengths, dtype=torch.int64),
        tokens=torch.from_numpy(tokens),
        token_lengths=torch.tensor([len(t) for _, t in pairs], dtype=torch.int64),
    )


def length_bucketed_batches(
    lengths: npt.NDArray[np.int64], max_frames: int, rng: np.random.Generator
) -> Iterator[list[int]]:
    """Shuffled batches of similar length whose padded size stays under ``max_frames`` feature frames."""
    order = np.argsort(lengths + rng.uniform(0, 30, size=len(lengths)))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        longest_if_added = max(longest, int(lengths[i]))
        if current and longest_if_added * (len(current) + 1) > max_frames:
            batches.append(current)
            current, longest_if_added = [], int(lengths[i])
        current.append(int(i))
        longest = longest_if_added
    if current:
        batches.append(current)
    for j in rng.permutation(len(batches)):
        yield batches[j]

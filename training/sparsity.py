"""Gradual magnitude sparsification (Zhu & Gupta, 2017), as used for on-device speech models.

Every weight matrix (linear, convolution, embedding, LSTM) is pruned to a sparsity that follows a cubic
schedule from 0 to ``final_sparsity`` between two points of training progress. Within each tensor the
smallest-magnitude weights are set to exactly zero and held there by a mask re-applied after every optimiser
step, so the exported int8 tensors (symmetric, zero point 0) keep the same zeros.

The masks are recomputed in steps of ``resolution`` sparsity (and once more at the final sparsity), not at
every optimiser step: a magnitude threshold per tensor (a k-th value over all its weights) is costly beside
one step of a small model, and Zhu & Gupta also prune at intervals. With the default resolution and the
training's final sparsity of 0.6 that is 120 recomputations.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """All weight tensors with two or more dimensions (biases and norms are left dense)."""
    return {name: p for name, p in model.named_parameters() if p.dim() >= 2}


def schedule(progress: float, final_sparsity: float, begin: float, end: float) -> float:
    """Target sparsity at ``progress`` in [0, 1] of training."""
    if progress <= begin:
        return 0.0
    if progress >= end:
        return final_sparsity
    frac = (progress - begin) / (end - begin)
    return final_sparsity * (1.0 - (1.0 - frac) ** 3)


class GradualPruner:
    def __init__(
        self,
        model: nn.Module,
        final_sparsity: float,
        begin: float = 0.2,
        end: float = 0.8,
        resolution: float = 0.005,
    ) -> None:
        if not 0.0 <= final_sparsity < 1.0:
            raise ValueError(f"final_sparsity must be in [0, 1), got {final_sparsity}")
        if resolution <= 0.0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.params = prunable_parameters(model)
        self.masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in self.params.items()}
        self.final_sparsity = final_sparsity
        self.begin = begin
        self.end = end
        self.resolution = resolution
        self.current = 0.0

    @torch.no_grad()
    def update(self, progress: float) -> float:
        """Bring the masks up to the sparsity due at ``progress`` (in steps of ``resolution``); returns it."""
        target = schedule(progress, self.final_sparsity, self.begin, self.end)
        if target < self.final_sparsity:
            target = math.floor(target / self.resolution) * self.resolution
        if target > self.current:
            for name, p in self.params.items():
                k = round(target * p.numel())
                if k == 0:
                    continue
                threshold = p.abs().flatten().kthvalue(k).values
                self.masks[name] = p.abs() > threshold
            self.current = target
        self.apply()
        return self.current

    @torch.no_grad()
    def apply(self) -> None:
        for name, p in self.params.items():
            p.mul_(self.masks[name])

    def state_dict(self) -> dict[str, object]:
        return {"masks": self.masks, "current": self.current}

    def load_state_dict(self, state: dict[str, object]) -> None:
        masks = state["masks"]
        if not isinstance(masks, dict):
            raise ValueError("pruner state has no masks")
        self.masks = masks
        self.current = float(state["current"])  # type: ignore[arg-type]  # stored as float by state_dict


def zero_fraction(model: nn.Module) -> tuple[int, int]:
    """(exactly-zero weights, all weights) over every parameter of the model."""
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    return zeros, total

"""RNN-T loss (Graves 2012), written here because torchaudio has no CPU build for this platform.

The forward variable alpha(t, u) is the log probability of having emitted the first u labels by frame t:

    alpha(0, 0) = 0
    alpha(t, u) = logaddexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + label(t, u-1))
    log P(y | x) = alpha(T-1, U) + blank(T-1, U)

For a fixed t the recursion along u is a prefix sum in log space: with a(u) = alpha(t-1, u) + blank(t-1, u)
and C(u) = sum_{j<u} label(t, j),  alpha(t, u) = C(u) + logcumsumexp_k<=u (a(k) - C(k)).  So each frame is
one vectorised operation over the batch and all u, and autograd differentiates it. Padded positions never
flow into a valid (t, u): alpha only reads smaller t and u.

Pruned training (the idea of Kuang et al., "Pruned RNN-T for fast, memory-efficient ASR training", 2022):
the full joiner evaluates tanh(enc(t) + pred(u)) for every (t, u) cell, and on a CPU that (B, T, U+1, J)
tensor is most of a training step. A "simple" joiner whose logits are am(t) + lm(u) costs only a matrix
product (:func:`simple_lattice`); its lattice's posterior says which labels each frame is likely to be
aligned with, and the full joiner is then evaluated only on ``width`` consecutive label positions per frame
(:func:`prune_ranges`, :func:`pruned_log_likelihood`). The model and the decoder are unchanged.
"""

from __future__ import annotations

import torch

_FAR = -1.0e4  # log probability of a cell outside the pruned band: finite, so gradients stay defined


def lattice_log_likelihood(
    blank_lp: torch.Tensor,
    label_lp: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """log P(y | x) per utterance (B,), summed over the lattice's paths, or over those inside pruned bands.

    Whole lattice (``start`` None): blank (B, T, U+1) and label (B, T, U) log probs at every label position.
    Bands: blank and label (B, T, W) log probs at positions ``band_positions(start, W)``; moving from frame
    t-1 to t shifts the band by start[t] - start[t-1] (the whole lattice is the band of width U+1 at 0).
    """
    batch, frames, width = blank_lp.shape
    if start is None:
        start = torch.zeros(batch, frames, dtype=torch.long, device=blank_lp.device)
        label_lp = torch.nn.functional.pad(label_lp, (0, 1))
    zeros = label_lp.new_zeros(batch, frames, 1)
    cum_label = torch.cat([zeros, torch.cumsum(label_lp[:, :, :-1], dim=2)], dim=2)  # C(t, k), (B, T, W)
    offsets = torch.arange(width, device=start.device)
    alphas = [cum_label[:, 0]]  # t = 0: the band starts at 0 and only label emissions reach (0, k)
    for t in range(1, frames):
        # Band t's positions in band t-1's coordinates (bands may move back only in padding frames).
        shift = (start[:, t] - start[:, t - 1])[:, None] + offsets
        came = alphas[-1] + blank_lp[:, t - 1]
        a = torch.gather(came, 1, shift.clamp(0, width - 1))
        a = torch.where((shift >= 0) & (shift < width), a, torch.full_like(a, _FAR))
        alphas.append(cum_label[:, t] + torch.logcumsumexp(a - cum_label[:, t], dim=1))
    alpha = torch.stack(alphas, dim=1)  # (B, T, W)
    idx_b = torch.arange(batch, device=blank_lp.device)
    last_t = logit_lengths - 1
    k = (target_lengths - start[idx_b, last_t]).clamp(0, width - 1)
    return alpha[idx_b, last_t, k] + blank_lp[idx_b, last_t, k]


def lattice_log_probs(log_probs: torch.Tensor, targets: torch.Tensor, blank: int) -> tuple[torch.Tensor, torch.Tensor]:
    frames = log_probs.shape[1]
    blank_lp = log_probs[..., blank]  # (B, T, U+1)
    label_lp = torch.gather(log_probs[:, :, :-1, :], 3, targets[:, None, :, None].expand(-1, frames, -1, 1))
    return blank_lp, label_lp.squeeze(3)  # (B, T, U)


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """Mean over the batch of -log P(targets | input).

    logits: (B, T, U+1, V) joiner outputs (unnormalised); targets: (B, U) int64, padded;
    logit_lengths: (B,) valid frames; target_lengths: (B,) valid labels.
    """
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    blank_lp, label_lp = lattice_log_probs(torch.log_softmax(logits, dim=-1), targets, blank)
    return -lattice_log_likelihood(blank_lp, label_lp, logit_lengths, target_lengths).mean()


def simple_lattice(
    am: torch.Tensor, lm: torch.Tensor, targets: torch.Tensor, blank: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blank (B, T, U+1) and label (B, T, U) log probs of the joiner whose logits are am(t) + lm(u).

    am: (B, T, V) from the encoder, lm: (B, U+1, V) from the predictor. The softmax normaliser
    log sum_v exp(am[t, v] + lm[u, v]) is one batched matrix product, so no (B, T, U+1, V) tensor is made.
    """
    frames = am.shape[1]
    am_max = am.detach().amax(dim=2, keepdim=True)  # (B, T, 1)
    lm_max = lm.detach().amax(dim=2, keepdim=True)  # (B, U+1, 1)
    products = torch.matmul((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2))  # (B, T, U+1)
    norm = products.clamp_min(1e-30).log() + am_max + lm_max.transpose(1, 2)
    blank_lp = am[..., blank, None] + lm[..., blank][:, None, :] - norm
    am_label = torch.gather(am, 2, targets[:, None, :].expand(-1, frames, -1))  # (B, T, U)
    lm_label = torch.gather(lm[:, :-1, :], 2, targets[:, :, None]).squeeze(2)  # (B, U)
    return blank_lp, am_label + lm_label[:, None, :] - norm[:, :, :-1]


@torch.no_grad()
def prune_ranges(
    blank_lp: torch.Tensor,
    label_lp: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """First label position (B, T) of each frame's band of ``width`` positions, and which utterances fit.

    Each band is the window holding most of the lattice's posterior occupancy at that frame, then moved so
    that some path stays inside the bands: the first band starts at 0, bands never move backwards nor by
    more than ``width - 1`` (consecutive bands overlap), and the last valid frame's band holds position U.
    An utterance with more labels than its frames can carry in such bands is reported as not fitting.
    """
    with torch.enable_grad():
        blank = blank_lp.detach().requires_grad_()
        label = label_lp.detach().requires_grad_()
        total = lattice_log_likelihood(blank, label, logit_lengths, target_lengths).sum()
        grad_blank, grad_label = torch.autograd.grad(total, [blank, label])
    occupancy = grad_blank + torch.nn.functional.pad(grad_label, (0, 1))  # (B, T, U+1)
    batch, frames, positions = occupancy.shape
    width = min(width, positions)
    windows = torch.cumsum(torch.nn.functional.pad(occupancy, (1, 0)), dim=2)
    mass = windows[:, :, width:] - windows[:, :, :-width]  # (B, T, U+2-width): mass of the band starting at s
    start = mass.argmax(dim=2)
    latest = (target_lengths + 1 - width).clamp(min=0)[:, None]
    start = torch.minimum(start, latest)
    start[:, 0] = 0
    for t in range(1, frames):
        start[:, t] = torch.minimum(torch.maximum(start[:, t], start[:, t - 1]), start[:, t - 1] + width - 1)
    idx_b = torch.arange(batch, device=start.device)
    last_t = logit_lengths - 1
    start[idx_b, last_t] = torch.maximum(start[idx_b, last_t], latest[:, 0])
    for t in range(frames - 2, -1, -1):
        raised = torch.maximum(start[:, t], start[:, t + 1] - (width - 1))
        start[:, t] = torch.where(t < last_t, raised, start[:, t])
    return start, start[:, 0] == 0


def band_positions(start: torch.Tensor, width: int) -> torch.Tensor:
    """Label positions (B, T, width) of the bands starting at ``start`` (B, T)."""
    return start[:, :, None] + torch.arange(width, device=start.device)


def pruned_log_likelihood(
    logits: torch.Tensor,
    start: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """log P(y | x) per utterance (B,), summed over the paths inside the bands.

    logits: (B, T, W, V) joiner outputs at positions ``band_positions(start, W)``; targets (B, U) as for
    :func:`rnnt_loss`.
    """
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    log_probs = torch.log_softmax(logits, dim=-1)
    frames, width = log_probs.shape[1], log_probs.shape[2]
    positions = band_positions(start, width).clamp(max=max(targets.shape[1] - 1, 0))
    blank_lp = log_probs[..., blank]  # (B, T, W)
    if targets.shape[1] == 0:
        label_lp = torch.full_like(blank_lp, _FAR)
    else:
        label_ids = torch.gather(targets[:, None, :].expand(-1, frames, -1), 2, positions)
        label_lp = torch.gather(log_probs, 3, label_ids[..., None]).squeeze(3)  # (B, T, W)
    return lattice_log_likelihood(blank_lp, label_lp, logit_lengths, target_lengths, start)


def rnnt_loss_reference(logits: torch.Tensor, targets: torch.Tensor, blank: int = 0) -> float:
    """Cell-by-cell recursion for one utterance (T, U+1, V); slow, used only to check :func:`rnnt_loss`."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    frames, labels_plus_one, _ = log_probs.shape
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float64)
    alpha = torch.full((frames, labels_plus_one), float("-inf"), dtype=torch.float64)
    alpha[0, 0] = 0.0
    for t in range(frames):
        for u in range(labels_plus_one):
            if t == 0 and u == 0:
                continue
            from_blank = alpha[t - 1, u] + log_probs[t - 1, u, blank] if t > 0 else neg_inf
            from_label = alpha[t, u - 1] + log_probs[t, u - 1, targets[u - 1]] if u > 0 else neg_inf
            alpha[t, u] = torch.logaddexp(from_blank, from_label)
    return float(-(alpha[-1, -1] + log_probs[-1, -1, blank]))

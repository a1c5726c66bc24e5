"""RNN-T loss (Graves 2012), written here because torchaudio has no CPU build for this platform.

The forward variable alpha(t, u) is the log probability of having emitted the first u labels by frame t:

    alpha(0, 0) = 0
    alpha(t, u) = logaddexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + label(t, u-1))
    log P(y | x) = alpha(T-1, U) + blank(T-1, U)

For a fixed t the recursion along u is a prefix sum in log space: with a(u) = alpha(t-1, u) + blank(t-1, u)
and C(u) = sum_{j<u} label(t, j),  alpha(t, u) = C(u) + logcumsumexp_k<=u (a(k) - C(k)).  So each frame is
one vectorised operation over the batch and all u, and autograd differentiates it. Padded positions never
flow into a valid (t, u): alpha only reads smaller t and u.
"""

from __future__ import annotations

import torch


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
    log_probs = torch.log_softmax(logits, dim=-1)
    batch, frames, _, _ = log_probs.shape
    blank_lp = log_probs[..., blank]  # (B, T, U+1)
    label_lp = torch.gather(log_probs[:, :, :-1, :], 3, targets[:, None, :, None].expand(-1, frames, -1, 1))
    label_lp = label_lp.squeeze(3)  # (B, T, U)

    zeros = label_lp.new_zeros(batch, frames, 1)
    cum_label = torch.cat([zeros, torch.cumsum(label_lp, dim=2)], dim=2)  # C(t, u), (B, T, U+1)

    alphas = [cum_label[:, 0]]  # t = 0: only label emissions
    for t in range(1, frames):
        a = alphas[-1] + blank_lp[:, t - 1]
        alphas.append(cum_label[:, t] + torch.logcumsumexp(a - cum_label[:, t], dim=1))
    alpha = torch.stack(alphas, dim=1)  # (B, T, U+1)

    idx_b = torch.arange(batch, device=logits.device)
    last_t = logit_lengths - 1
    log_likelihood = alpha[idx_b, last_t, target_lengths] + blank_lp[idx_b, last_t, target_lengths]
    return -log_likelihood.mean()


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

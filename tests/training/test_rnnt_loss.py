from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="training extra (torch) not installed")

from training.rnnt_loss import (  # noqa: E402
    band_positions,
    lattice_log_likelihood,
    lattice_log_probs,
    lattice_occupancy,
    prune_ranges,
    pruned_log_likelihood,
    rnnt_loss,
    rnnt_loss_reference,
    simple_lattice,
)


def test_matches_cell_by_cell_recursion_with_padding() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 5, 6)
    targets = torch.randint(1, 6, (3, 4))
    frames = torch.tensor([7, 5, 6])
    labels = torch.tensor([4, 2, 3])
    loss = rnnt_loss(logits, targets, frames, labels)
    expected = sum(
        rnnt_loss_reference(logits[b, : frames[b], : labels[b] + 1], targets[b, : labels[b]]) for b in range(3)
    ) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_gradient_matches_finite_differences() -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 3]])
    lengths = (torch.tensor([4]), torch.tensor([2]))
    rnnt_loss(logits, targets, *lengths).backward()
    assert logits.grad is not None
    eps = 1e-4
    with torch.no_grad():
        for idx in [(0, 0, 0, 0), (0, 1, 1, 3), (0, 3, 2, 0)]:
            bumped = logits.detach().clone()
            bumped[idx] += eps
            up = float(rnnt_loss(bumped, targets, *lengths))
            bumped[idx] -= 2 * eps
            down = float(rnnt_loss(bumped, targets, *lengths))
            assert logits.grad[idx].item() == pytest.approx((up - down) / (2 * eps), abs=1e-4)


@pytest.mark.parametrize("banded", [False, True])
def test_lattice_gradients_match_finite_differences(banded: bool) -> None:
    # The forward-backward gradients against numerical ones, whole lattice and bands (one utterance's bands
    # move back in its padding frames), with utterances of different lengths in one batch.
    torch.manual_seed(5)
    frames, labels = torch.tensor([6, 4]), torch.tensor([4, 3])
    width = 3 if banded else 5
    start = torch.tensor([[0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 0, 0]]) if banded else None
    blank = torch.randn(2, 6, width, dtype=torch.float64, requires_grad=True)
    label = torch.randn(2, 6, width if banded else 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda b, lab: lattice_log_likelihood(b, lab, frames, labels, start), (blank, label)
    )


def test_every_valid_frame_emits_one_blank() -> None:
    # Each alignment emits exactly one blank per valid frame and none after: the blank posteriors, which
    # are the gradient with respect to the blank log probs, sum to one on every valid frame ...
    targets, frames, labels = _batch(11)
    blank_lp, label_lp = lattice_log_probs(torch.log_softmax(torch.randn(3, 9, 7, 6), dim=-1), targets, 0)
    blank_lp.requires_grad_()
    lattice_log_likelihood(blank_lp, label_lp, frames, labels).sum().backward()
    assert blank_lp.grad is not None
    per_frame = blank_lp.grad.sum(dim=2)
    valid = torch.arange(9)[None, :] < frames[:, None]
    assert torch.allclose(per_frame[valid], torch.ones(int(valid.sum())), atol=1e-4)
    assert float(per_frame[~valid].abs().max()) == 0.0
    # ... and exactly U labels: the cells an alignment visits number T + U
    occupancy = lattice_occupancy(blank_lp, label_lp, frames, labels)[1]
    assert torch.allclose(occupancy.sum(dim=(1, 2)), (frames + labels).float(), atol=1e-3)


def test_certain_path_has_zero_loss() -> None:
    # A joiner that puts all mass on the right label, then blank, gives probability one.
    big = 50.0
    logits = torch.full((1, 2, 2, 3), -big)
    logits[0, 0, 0, 2] = big  # emit label 2 at t=0
    logits[0, 0, 1, 0] = big  # then blank
    logits[0, 1, 1, 0] = big  # blank at t=1
    loss = rnnt_loss(logits, torch.tensor([[2]]), torch.tensor([2]), torch.tensor([1]))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def _batch(seed: int) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(seed)
    targets = torch.randint(1, 6, (3, 6))
    frames = torch.tensor([9, 6, 8])
    labels = torch.tensor([6, 3, 5])
    return targets, frames, labels


def test_pruned_loss_over_a_band_as_wide_as_the_lattice_is_the_full_loss() -> None:
    targets, frames, labels = _batch(2)
    logits = torch.randn(3, 9, 7, 6)
    start = torch.zeros(3, 9, dtype=torch.long)
    pruned = -pruned_log_likelihood(logits, start, targets, frames, labels).mean()
    assert float(pruned) == pytest.approx(float(rnnt_loss(logits, targets, frames, labels)), rel=1e-5)


def test_simple_lattice_is_the_lattice_of_summed_logits() -> None:
    targets = _batch(3)[0]
    am, lm = torch.randn(3, 9, 6) * 3, torch.randn(3, 7, 6) * 3
    blank_lp, label_lp = simple_lattice(am, lm, targets)
    full = torch.log_softmax(am[:, :, None, :] + lm[:, None, :, :], dim=-1)
    assert torch.allclose(blank_lp, full[..., 0], atol=1e-5)
    expected = torch.gather(full[:, :, :-1, :], 3, targets[:, None, :, None].expand(-1, 9, -1, 1)).squeeze(3)
    assert torch.allclose(label_lp, expected, atol=1e-5)


@pytest.mark.parametrize("width", [2, 3, 4])
def test_prune_ranges_keep_a_path_and_pruned_likelihood_is_a_lower_bound(width: int) -> None:
    targets, frames, labels = _batch(4 + width)
    am, lm = torch.randn(3, 9, 6) * 2, torch.randn(3, 7, 6) * 2
    blank_lp, label_lp = simple_lattice(am, lm, targets)
    start, fits = prune_ranges(lattice_occupancy(blank_lp, label_lp, frames, labels)[1], frames, labels, width)
    assert bool(fits.all())
    for b in range(3):
        s = start[b, : frames[b]]
        steps = s[1:] - s[:-1]
        assert int(s[0]) == 0 and bool((steps >= 0).all()) and bool((steps <= width - 1).all())
        assert int(s[-1]) <= int(labels[b]) <= int(s[-1]) + width - 1
    logits = torch.randn(3, 9, 7, 6)
    full = rnnt_loss(logits, targets, frames, labels)
    band = torch.gather(logits, 2, band_positions(start, width)[..., None].expand(-1, -1, -1, 6))
    pruned = -pruned_log_likelihood(band, start, targets, frames, labels)
    assert bool(torch.isfinite(pruned).all())
    assert float(pruned.mean()) >= float(full) - 1e-4  # fewer paths: never more likely


def test_pruned_loss_finds_the_likely_alignment() -> None:
    # A lattice whose mass lies on one diagonal path: the bands follow it and lose almost nothing.
    frames, labels = torch.tensor([8]), torch.tensor([4])
    targets = torch.tensor([[1, 2, 3, 4]])
    logits = torch.zeros(1, 8, 5, 6)
    for t in range(8):
        for u in range(5):
            want = u + 1 if (u < 4 and t == 2 * u) else 0
            logits[0, t, u, want] = 8.0
    blank_lp, label_lp = lattice_log_probs(torch.log_softmax(logits, dim=-1), targets, 0)
    start, _ = prune_ranges(lattice_occupancy(blank_lp, label_lp, frames, labels)[1], frames, labels, 2)
    band = torch.gather(logits, 2, band_positions(start, 2)[..., None].expand(-1, -1, -1, 6))
    pruned = -pruned_log_likelihood(band, start, targets, frames, labels)
    assert float(pruned) == pytest.approx(float(rnnt_loss(logits, targets, frames, labels)), abs=0.05)


def test_pruned_loss_ignores_bands_that_move_back_in_padding_frames() -> None:
    # Utterance 1 has 6 labels in 3 frames, so its bands climb as fast as they may (0, 2, 4); the padding
    # frames after it can hold any band, lower ones included, without touching its likelihood.
    torch.manual_seed(9)
    targets = torch.randint(1, 6, (2, 6))
    frames, labels = torch.tensor([8, 3]), torch.tensor([2, 6])
    logits = torch.randn(2, 8, 7, 6)
    results = []
    for padding in (4, 0):
        start = torch.tensor([[0] * 8, [0, 2, 4] + [padding] * 5])
        band = torch.gather(logits, 2, band_positions(start, 3)[..., None].expand(-1, -1, -1, 6))
        results.append(pruned_log_likelihood(band, start, targets, frames, labels))
    assert bool(torch.isfinite(results[1]).all())
    assert torch.allclose(results[0], results[1])

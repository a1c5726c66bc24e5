from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="training extra (torch) not installed")

from training.rnnt_loss import rnnt_loss, rnnt_loss_reference  # noqa: E402


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


def test_certain_path_has_zero_loss() -> None:
    # A joiner that puts all mass on the right label, then blank, gives probability one.
    big = 50.0
    logits = torch.full((1, 2, 2, 3), -big)
    logits[0, 0, 0, 2] = big  # emit label 2 at t=0
    logits[0, 0, 1, 0] = big  # then blank
    logits[0, 1, 1, 0] = big  # blank at t=1
    loss = rnnt_loss(logits, torch.tensor([[2]]), torch.tensor([2]), torch.tensor([1]))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)

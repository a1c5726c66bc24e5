"""Fixtures for the rescorer tests: a small LM built from the training corpus, and lattice builders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.lattice import Lattice, new_utterance_id
from daemon.recognizer import Hypothesis
from daemon.textnorm import ALPHABET
from daemon.tokens import TokenTable
from rescorer.arpa import NgramLM, save_arpa
from rescorer.build_lm import build

TOKENS = TokenTable.from_alphabet(ALPHABET).tokens
FRAME_SHIFT_S = 0.04
LM_SENTENCES = 3000  # enough for the templates' structure; builds in well under a second


def hypothesis(text: str, acoustic: float, bias: float = 0.0) -> Hypothesis:
    """A hypothesis whose characters are emitted every other encoder frame."""
    ids = tuple(TOKENS.index(c) for c in text)
    return Hypothesis(text, ids, tuple(5 + 2 * i for i in range(len(ids))), acoustic, bias)


def lattice_of(entries: list[tuple[str, float, float]], *, kind: str = "final", device_id: str = "kitchen",
               seq: int = 1, utterance_id: str | None = None) -> Lattice:
    """A lattice built by the daemon's builder from (text, acoustic, bias) entries, best first."""
    return Lattice.from_nbest(
        [hypothesis(text, acoustic, bias) for text, acoustic, bias in entries],
        token_list=TOKENS,
        frame_shift_s=FRAME_SHIFT_S,
        utterance_id=utterance_id or new_utterance_id(),
        device_id=device_id,
        kind=kind,  # type: ignore[arg-type]  # tests pass "final" or "speculative"
        seq=seq,
        start_time=3.0,
        end_time=5.5,
        models={"recognizer": "test"},
    )


@pytest.fixture(scope="session")
def corpus_lm() -> NgramLM:
    """A trigram LM from 3000 training sentences (the shipped one uses 20000)."""
    return build(LM_SENTENCES).lm


@pytest.fixture(scope="session")
def corpus_lm_file(corpus_lm: NgramLM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lm") / "lm.arpa"
    save_arpa(corpus_lm, path)
    return path


@pytest.fixture
def make_lattice() -> Callable[..., Lattice]:
    """``make_lattice([(text, acoustic, bias), ...], kind="final", device_id="kitchen", seq=1)``."""
    return lattice_of


@pytest.fixture(scope="session")
def name_words() -> dict[str, Any]:
    """A held-out name word (never in a training sentence) and a training name word, neither a common word."""
    from training.text_corpus import corpus_split

    split = corpus_split()
    held = sorted(split.held_out_words)[0]
    train = next(n for n in sorted(split.train_names) if " " not in n and n not in ("will", "may", "rose", "oh"))
    return {"held_out": held, "train": train}

"""Rescoring decisions, without MQTT: LM against acoustics, the bias bonus removed, results well formed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from daemon.lattice import Lattice
from daemon.messages import Result, decode, encode, validate_payload
from rescorer.arpa import NgramLM
from rescorer.rescore import RESULT_SOURCE, Rescorer, RescoreWeights

LIKED, DISLIKED = "set a timer for ten minutes", "set a time for ten minutes"


def test_lm_breaks_a_near_tie(corpus_lm: NgramLM, make_lattice: Callable[..., Lattice]) -> None:
    rescorer = Rescorer(corpus_lm)
    lm_gap = corpus_lm.sentence_ln(LIKED.split()) - corpus_lm.sentence_ln(DISLIKED.split())
    assert lm_gap > 5  # the premise: the LM clearly likes "timer" here
    lattice = make_lattice([(DISLIKED, -10.0, 0.0), (LIKED, -11.0, 0.0)])  # acoustically 1 nat worse
    result = rescorer.result_for(lattice)
    assert result is not None and result.text == LIKED
    ranked = rescorer.rescore(lattice)
    assert [s.text for s in ranked] == [LIKED, DISLIKED]
    w = rescorer.weights
    assert ranked[0].total == pytest.approx(-11.0 + w.lm_weight * ranked[0].lm + w.word_bonus * 6)


def test_acoustics_win_when_far_apart(corpus_lm: NgramLM, make_lattice: Callable[..., Lattice]) -> None:
    rescorer = Rescorer(corpus_lm)
    lm_gap = corpus_lm.sentence_ln(LIKED.split()) - corpus_lm.sentence_ln(DISLIKED.split())
    far = rescorer.weights.lm_weight * lm_gap + 20.0  # more acoustic evidence than the LM can outweigh
    lattice = make_lattice([(DISLIKED, -10.0, 0.0), (LIKED, -10.0 - far, 0.0)])
    result = rescorer.result_for(lattice)
    assert result is not None and result.text == DISLIKED


def test_bias_bonus_is_removed(corpus_lm: NgramLM, make_lattice: Callable[..., Lattice],
                               name_words: dict[str, Any]) -> None:
    # Two names in the same place score the same in the LM (both are the <unk> class), so only the
    # acoustic scores can decide. The device put the biased one first; without its bonus it is worse.
    biased, plain = f"call {name_words['held_out']}", f"call {name_words['train']}"
    lattice = make_lattice([(biased, -14.0, 6.0), (plain, -12.0, 0.0)])
    assert lattice.best is not None and lattice.best.text == biased  # first on the device: -8 against -12
    ranked = Rescorer(corpus_lm).rescore(lattice)
    assert ranked[0].text == plain and ranked[0].acoustic == -12.0 and ranked[1].acoustic == -14.0
    assert ranked[0].lm == ranked[1].lm


def test_unknown_name_is_not_replaced_by_in_vocabulary_words(corpus_lm: NgramLM,
                                                             make_lattice: Callable[..., Lattice],
                                                             name_words: dict[str, Any]) -> None:
    name = name_words["held_out"]
    lattice = make_lattice([(f"call {name}", -9.0, 2.0), ("call timer", -9.5, 0.0), ("call the", -9.5, 0.0)])
    result = Rescorer(corpus_lm).result_for(lattice)
    assert result is not None and result.text == f"call {name}"


def test_result_is_a_valid_result_message(corpus_lm: NgramLM, make_lattice: Callable[..., Lattice]) -> None:
    lattice = make_lattice([(LIKED, -10.0, 0.5)], device_id="hall", seq=4)
    result = Rescorer(corpus_lm).result_for(lattice)
    assert result is not None
    payload = encode(result)
    validate_payload("result", result.to_dict())
    assert decode(Result, payload) == result
    assert (result.utterance_id, result.device_id, result.seq, result.kind, result.source) == (
        lattice.utterance_id, "hall", 4, "final", RESULT_SOURCE)
    assert result.score is not None and result.score < 0


def test_speculative_lattices_get_no_result(corpus_lm: NgramLM, make_lattice: Callable[..., Lattice]) -> None:
    assert Rescorer(corpus_lm).result_for(make_lattice([(LIKED, -10.0, 0.0)], kind="speculative")) is None


def test_lattice_without_nbest_is_rescored_over_its_paths(corpus_lm: NgramLM,
                                                          make_lattice: Callable[..., Lattice]) -> None:
    full = make_lattice([(DISLIKED, -10.0, 3.0), (LIKED, -11.0, 0.0)])
    graph_only = dataclasses.replace(full, nbest=())
    rescorer = Rescorer(corpus_lm)
    by_paths = {s.text: s for s in rescorer.rescore(graph_only)}
    by_nbest = {s.text: s for s in rescorer.rescore(full)}
    assert set(by_paths) == {LIKED, DISLIKED}
    for text, scored in by_nbest.items():
        assert by_paths[text].total == pytest.approx(scored.total)  # arcs' acoustic parts sum to the entry's


def test_empty_lattice_gives_empty_text(corpus_lm: NgramLM, make_lattice: Callable[..., Lattice]) -> None:
    result = Rescorer(corpus_lm).result_for(make_lattice([]))
    assert result is not None and result.text == "" and result.score is None
    validate_payload("result", result.to_dict())


@pytest.mark.parametrize(("lm_weight", "word_bonus"), [(-0.1, 0.0), (float("nan"), 0.0), (0.5, float("inf"))])
def test_weights_are_checked(lm_weight: float, word_bonus: float) -> None:
    with pytest.raises(ValueError):
        RescoreWeights(lm_weight, word_bonus)

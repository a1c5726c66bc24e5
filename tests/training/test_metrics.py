from __future__ import annotations

import pytest

from training.metrics import Scoreboard, contains_phrase, edit_distance


def test_edit_distance_counts_substitutions_insertions_deletions() -> None:
    assert edit_distance("call mum now".split(), "call mom now".split()) == 1
    assert edit_distance("call mum".split(), "call my mum".split()) == 1
    assert edit_distance("call my mum".split(), "call mum".split()) == 1
    assert edit_distance([], "a b".split()) == 2


def test_scoreboard_groups_and_entities() -> None:
    board = Scoreboard()
    board.add({"condition": "clean"}, "call siobhan okafor", "call siobhan okafor", ["siobhan okafor"])
    board.add({"condition": "noise"}, "turn on the fan", "turn of the fan", [])
    board.add({"condition": "noise"}, "call ann", "call an", ["ann"])
    scores = board.to_dict()
    assert scores["condition"]["clean"]["wer_percent"] == 0.0
    assert scores["condition"]["noise"]["wer_percent"] == pytest.approx(100 * 2 / 6, abs=0.01)
    assert scores["all"]["all"]["entity_accuracy_percent"] == 50.0
    assert scores["condition"]["noise"]["entity_accuracy_percent"] == 0.0
    assert contains_phrase("call siobhan okafor".split(), ["siobhan", "okafor"])
    assert not contains_phrase("call siobhan".split(), ["siobhan", "okafor"])
    # A name said in the possessive is the name: otherwise no transcript could get it right.
    assert contains_phrase("call siobhan okafor's phone".split(), ["siobhan", "okafor"])
    assert contains_phrase("call samesh's home number".split(), ["samesh"])
    assert not contains_phrase("call siobhan's okafor phone".split(), ["siobhan", "okafor"])
    assert not contains_phrase("call sameshs phone".split(), ["samesh"])

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from daemon.commands import lattice_export
from daemon.lattice import EPSILON, LATTICE_SCHEMA, Arc, Lattice, LatticeError, new_utterance_id
from daemon.recognizer import Hypothesis
from daemon.textnorm import ALPHABET
from daemon.tokens import TokenTable

TOKENS = TokenTable.from_alphabet(ALPHABET).tokens
SHIFT = 0.04  # seconds per encoder frame
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "daemon" / "schemas" / "lattice.schema.json"
UTT = "0b6c3a52-2f0e-4d7c-9a51-8f1e2d3c4b5a"


def make_hyp(
    text: str, tokens: tuple[int, ...], frames: tuple[int, ...], acoustic: float, bias: float = 0.0
) -> Hypothesis:
    return Hypothesis(text, tokens, frames, acoustic, bias)


@dataclass(frozen=True)
class HypWithTokenScores(Hypothesis):
    """A hypothesis that also carries per-token scores (optional; used when present)."""

    token_acoustic_scores: tuple[float, ...] = ()
    token_bias_scores: tuple[float, ...] = ()


def hyp(text: str, acoustic: float, bias: float = 0.0, *, first_frame: int = 5, frames_per_char: int = 2) -> Hypothesis:
    """A hypothesis whose characters are emitted every ``frames_per_char`` frames from ``first_frame``."""
    ids = tuple(TOKENS.index(c) for c in text)
    frames = tuple(first_frame + i * frames_per_char for i in range(len(ids)))
    return make_hyp(text, ids, frames, acoustic, bias)


def build(hyps: list[Hypothesis], **overrides: object) -> Lattice:
    kwargs: dict[str, object] = {
        "token_list": TOKENS,
        "frame_shift_s": SHIFT,
        "utterance_id": UTT,
        "device_id": "kitchen",
        "kind": "final",
        "seq": 1,
        "start_time": 12.5,
        "end_time": 14.5,
        "models": {"recognizer": "rnnt-1.0", "wake": "wake-1.0"},
    }
    kwargs.update(overrides)
    return Lattice.from_nbest(hyps, **kwargs)  # type: ignore[arg-type]  # keyword types checked by from_nbest


def path_words(path: tuple[Arc, ...]) -> str:
    return " ".join(a.word for a in path)


def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def check_invariants(lattice: Lattice) -> None:
    """Each n-best text is a path whose arcs sum to its scores (first of equal texts); times in order."""
    paths = {path_words(p): p for p in lattice.paths()}
    texts = [e.text for e in lattice.nbest]
    assert set(paths) == set(texts)
    assert len(paths) == len(list(lattice.paths()))  # no two paths with the same words
    seen = set()
    for entry in lattice.nbest:
        if entry.text in seen:
            continue
        seen.add(entry.text)
        path = paths[entry.text]
        assert math.isclose(sum(a.acoustic_score for a in path), entry.acoustic_score, abs_tol=1e-9)
        assert math.isclose(sum(a.bias_score for a in path), entry.bias_score, abs_tol=1e-9)
    for arc in lattice.arcs:
        assert arc.source < arc.target
        assert lattice.nodes[arc.source].time <= arc.start <= arc.end <= lattice.nodes[arc.target].time
    schema_validator().validate(lattice.to_dict())


def test_shared_prefixes_merge_and_every_hypothesis_is_a_path() -> None:
    lattice = build(
        [
            hyp("call mom", -8.0, 2.0),
            hyp("call tom", -9.0),
            hyp("call mom now", -10.0, 2.5),
            hyp("fall mom", -12.0),
        ]
    )
    check_invariants(lattice)
    words_from_start = sorted(a.word for a in lattice.arcs if a.source == 0)
    assert words_from_start == ["call", "fall"]  # "call" is shared by three hypotheses
    # call (shared), mom (last), tom, mom (not last), now, fall, mom (after fall)
    assert len(lattice.arcs) == 7
    assert lattice.end_node == len(lattice.nodes) - 1
    assert all(a.target == lattice.end_node for a in lattice.arcs if a.word in ("tom", "now"))


def test_scores_split_by_characters_and_remainders_on_last_arcs() -> None:
    lattice = build([hyp("call mom", -7.0, 3.5), hyp("call tom", -9.0, 0.0)])
    by_word = {a.word: a for a in lattice.arcs}
    # best hypothesis: "call" has 4 of 7 characters
    assert by_word["call"].acoustic_score == pytest.approx(-4.0)
    assert by_word["call"].bias_score == pytest.approx(2.0)
    assert by_word["mom"].acoustic_score == pytest.approx(-3.0)
    assert by_word["mom"].bias_score == pytest.approx(1.5)
    # the second one shares "call" and its last arc takes the rest
    assert by_word["tom"].acoustic_score == pytest.approx(-5.0)
    assert by_word["tom"].bias_score == pytest.approx(-2.0)
    assert [(e.text, e.score) for e in lattice.nbest] == [("call mom", -3.5), ("call tom", -9.0)]


def test_per_token_scores_are_used_when_the_hypothesis_has_them() -> None:
    base = hyp("call bob", -6.0, 3.0)
    # bias only on "bob" (tokens 5..7); the space (token 4) counts toward "call"
    with_scores = HypWithTokenScores(
        base.text,
        base.tokens,
        base.token_frames,
        base.acoustic_score,
        base.bias_score,
        token_acoustic_scores=(-1.0, -0.5, -0.5, -0.5, -0.5, -1.0, -1.0, -1.0),
        token_bias_scores=(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0),
    )
    lattice = build([with_scores])
    by_word = {a.word: a for a in lattice.arcs}
    assert by_word["call"].acoustic_score == pytest.approx(-3.0)
    assert by_word["call"].bias_score == pytest.approx(0.0)
    assert by_word["bob"].bias_score == pytest.approx(3.0)
    check_invariants(lattice)


def test_word_times_come_from_token_frames() -> None:
    # "hi" at frames 10, 11; space at 12; "you" at 20, 21, 22
    text = "hi you"
    tokens = tuple(TOKENS.index(c) for c in text)
    lattice = build([make_hyp(text, tokens, (10, 11, 12, 20, 21, 22), -3.0)], start_time=1.0, end_time=2.5)
    hi, you = lattice.arcs
    assert (hi.start, hi.end) == pytest.approx((0.40, 0.48))
    assert (you.start, you.end) == pytest.approx((0.80, 0.92))
    assert lattice.nodes[hi.target].time == pytest.approx(0.48)
    assert lattice.nodes[lattice.end_node].time == pytest.approx(1.5)  # the utterance's duration
    assert lattice.duration == pytest.approx(1.5)


def test_text_that_disagrees_with_tokens_keeps_the_text_words() -> None:
    tokens = tuple(TOKENS.index(c) for c in "callmom")  # no space token
    lattice = build([make_hyp("call mom", tokens, tuple(range(7)), -2.0)])
    assert [a.word for a in lattice.arcs] == ["call", "mom"]
    check_invariants(lattice)


def test_empty_hypothesis_and_empty_nbest() -> None:
    lattice = build([hyp("lights on", -5.0), make_hyp("", (), (), -9.0)])
    check_invariants(lattice)
    (eps,) = [a for a in lattice.arcs if a.word == EPSILON]
    assert (eps.source, eps.target, eps.acoustic_score) == (0, lattice.end_node, -9.0)
    assert "W=!NULL" in lattice.to_htk_slf()
    assert "\t<eps>\t<eps>\t" in lattice.to_openfst_text()

    nothing = build([])
    assert (len(nothing.nodes), nothing.arcs, nothing.nbest, nothing.best) == (1, (), (), None)
    assert nothing.start_node == nothing.end_node == 0
    assert list(nothing.paths()) == []
    schema_validator().validate(nothing.to_dict())


def test_duplicate_texts_share_the_better_path() -> None:
    lattice = build([hyp("turn on", -4.0), hyp("turn on", -6.0, first_frame=9), hyp("turn off", -7.0)])
    assert len(lattice.nbest) == 3
    assert len(list(lattice.paths())) == 2
    check_invariants(lattice)


def test_random_nbest_lists_keep_the_invariants() -> None:
    rng = random.Random(7)
    vocab = ["call", "mom", "tom", "lights", "on", "off", "kitchen", "a", "bob's"]
    for _ in range(200):
        hyps = []
        for _ in range(rng.randint(1, 8)):
            words = [rng.choice(vocab) for _ in range(rng.randint(0, 5))]
            text = " ".join(words)
            ids = tuple(TOKENS.index(c) for c in text)
            frames, f = [], rng.randint(0, 5)
            for _ in ids:
                f += rng.randint(0, 3)
                frames.append(f)
            hyps.append(make_hyp(text, ids, tuple(frames), rng.uniform(-40, 0), rng.choice([0.0, rng.uniform(0, 6)])))
        hyps.sort(key=lambda h: -h.score)
        check_invariants(build(hyps, end_time=12.5 + rng.uniform(0, 4)))


def test_dict_and_json_round_trip() -> None:
    lattice = build([hyp("call mom", -8.0, 2.0), hyp("call tom", -9.0)], kind="speculative", seq=0)
    document = lattice.to_dict()
    assert document["schema"] == LATTICE_SCHEMA == "harkd.lattice/1"
    assert (document["utterance_id"], document["kind"], document["seq"]) == (UTT, "speculative", 0)
    assert Lattice.from_dict(document) == lattice
    assert Lattice.from_json(lattice.to_json()) == lattice
    assert Lattice.from_dict(json.loads(json.dumps(document))) == lattice
    assert document["nbest"][0]["score"] == pytest.approx(-6.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema="harkd.lattice/2"), "schema"),
        (lambda d: d.update(kind="partial"), "kind"),
        (lambda d: d.update(seq=-1), "seq"),
        (lambda d: d.update(utterance_id="not-a-uuid"), "utterance_id"),
        (lambda d: d["arcs"][0].update({"from": 2, "to": 1}), "forward"),
        (lambda d: d["arcs"][0].update(to=99), "forward"),
        (lambda d: d["arcs"][0].pop("bias_score"), "bias_score"),
        (lambda d: d.update(end_node=0), "end_node"),
        (lambda d: d["nodes"][1].update(id=5), "ids"),
        (lambda d: d.update(start_time=20.0), "start_time"),
    ],
)
def test_from_dict_rejects_bad_lattices(change: Callable[[dict[str, Any]], object], message: str) -> None:
    document = build([hyp("call mom", -8.0), hyp("call tom", -9.0)]).to_dict()
    change(document)
    with pytest.raises(LatticeError, match=message):
        Lattice.from_dict(document)


def test_from_nbest_rejects_bad_input() -> None:
    with pytest.raises(LatticeError, match="token id"):
        build([make_hyp("a", (999,), (0,), -1.0)])
    with pytest.raises(LatticeError, match="token frames"):
        build([make_hyp("ab", (2, 3), (0,), -1.0)])
    with pytest.raises(LatticeError, match="finite"):
        build([hyp("ab", float("-inf"))])
    with pytest.raises(LatticeError, match="kind"):
        build([hyp("ab", -1.0)], kind="partial")


def test_htk_slf() -> None:
    lattice = build([hyp("call mom", -7.0, 3.5), hyp("call tom", -9.0)])
    text = lattice.to_htk_slf()
    fields = [dict(part.split("=", 1) for part in line.split()) for line in text.splitlines() if line[0] != "#"]
    header = {k: v for f in fields for k, v in f.items() if "I" not in f and "J" not in f}
    assert header["VERSION"] == "1.0"
    assert header["UTTERANCE"] == UTT
    assert (int(header["start"]), int(header["end"]), int(header["N"]), int(header["L"])) == (0, 2, 3, 3)
    nodes = [f for f in fields if "I" in f]
    arcs = [f for f in fields if "J" in f]
    assert [float(n["t"]) for n in nodes] == pytest.approx([n.time for n in lattice.nodes], abs=1e-3)
    assert [(int(a["S"]), int(a["E"]), a["W"]) for a in arcs] == [(a.source, a.target, a.word) for a in lattice.arcs]
    assert [float(a["a"]) for a in arcs] == pytest.approx([a.acoustic_score for a in lattice.arcs], abs=1e-6)
    assert [float(a["l"]) for a in arcs] == pytest.approx([a.bias_score for a in lattice.arcs], abs=1e-6)


def test_openfst_text_and_symbols() -> None:
    lattice = build([hyp("call mom", -7.0, 3.5), hyp("call tom", -9.0)])
    lines = lattice.to_openfst_text().splitlines()
    assert lines[-1] == str(lattice.end_node)
    arcs = [line.split("\t") for line in lines[:-1]]
    assert [(int(s), int(t), i, o) for s, t, i, o, _ in arcs] == [
        (a.source, a.target, a.word, a.word) for a in lattice.arcs
    ]
    assert [float(c) for *_, c in arcs] == pytest.approx([-(a.acoustic_score + a.bias_score) for a in lattice.arcs])
    acoustic_only = [
        float(line.split("\t")[4]) for line in lattice.to_openfst_text(include_bias=False).splitlines()[:-1]
    ]
    assert acoustic_only == pytest.approx([-a.acoustic_score for a in lattice.arcs])
    assert lattice.openfst_symbols() == {"<eps>": 0, "call": 1, "mom": 2, "tom": 3}
    assert lattice.openfst_symbols_text().splitlines()[1] == "call\t1"


def test_new_utterance_ids_validate() -> None:
    lattice = build([hyp("on", -1.0)], utterance_id=new_utterance_id())
    schema_validator().validate(lattice.to_dict())


# -- harkd lattice-export ---------------------------------------------------------------------------------


def export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harkd")
    lattice_export.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lattice-export", *argv])
    status: int = args.func(args)
    return status


def test_export_writes_slf_and_fst(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lattice = build([hyp("call mom", -7.0, 3.5), hyp("call tom", -9.0)])
    source = tmp_path / "lattice.json"
    source.write_bytes(lattice.to_json())
    assert export([str(source)]) == 0
    assert capsys.readouterr().out == lattice.to_htk_slf()
    out, symbols = tmp_path / "l.fst.txt", tmp_path / "words.txt"
    assert export(["--format", "fst", "-o", str(out), "--symbols", str(symbols), str(source)]) == 0
    assert out.read_text() == lattice.to_openfst_text()
    assert symbols.read_text() == lattice.openfst_symbols_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b"", "empty"),
        (b'{"schema": "harkd.lattice/1"}', "required property"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_export_rejects_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    source = tmp_path / "bad.json"
    source.write_bytes(content)
    assert export([str(source)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "harkd lattice-export: error:" in captured.err and message in captured.err and "bad.json" in captured.err


def test_export_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export([str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_the_harkd_command_line(tmp_path: Path) -> None:
    lattice = build([hyp("call mom", -7.0, 3.5)])
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_bytes(lattice.to_json())
    bad.write_text('{"schema": "harkd.lattice/1", "nodes": []', encoding="utf-8")
    command = [sys.executable, "-m", "daemon.cli", "lattice-export"]
    done = subprocess.run([*command, "--format", "fst", str(good)], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, lattice.to_openfst_text())
    done = subprocess.run([*command, str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert "bad.json: payload is not JSON" in done.stderr

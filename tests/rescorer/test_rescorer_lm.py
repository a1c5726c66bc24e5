"""The rescorer's language model: estimation, normalisation, ARPA round trip, the <unk> name class."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import pytest

from rescorer.arpa import BOS, EOS, UNK, ArpaError, NgramLM, parse_arpa, read_arpa, write_arpa
from rescorer.build_lm import NameClassMapper, main
from rescorer.estimate import estimate

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "rescorer" / "lm.arpa"

TOY = [s.split() for s in ("a b", "a c", "a b", "b c a", "c")]


def distribution_sum(lm: NgramLM, history: list[str]) -> float:
    words = [w for w in lm.vocabulary if w != BOS]
    return sum(10 ** lm.log10_prob(w, history) for w in words)


# ------------------------------------------------------------------------------------------ estimation


def test_bigram_probabilities_follow_the_interpolation_formula() -> None:
    lm = estimate([s.split() for s in ("a b", "a c", "a b")], order=2).lm
    # bigrams: <s> a 3, a b 2, a c 1, b </s> 2, c </s> 1 -> n1 = 2, n2 = 2, D = 2 / (2 + 4)
    d = 2 / 6
    unigram = {"a": 3 / 9, "b": 2 / 9, "c": 1 / 9, EOS: 3 / 9}
    for word, p in unigram.items():
        assert 10 ** lm.log10_prob(word, []) == pytest.approx(p, rel=1e-12)
    expected_b = (2 - d) / 3 + d * 2 / 3 * unigram["b"]
    assert 10 ** lm.log10_prob("b", ["a"]) == pytest.approx(expected_b, rel=1e-12)
    # "a" never follows "a": all of its probability comes through the back-off weight
    assert 10 ** lm.log10_prob("a", ["a"]) == pytest.approx(d * 2 / 3 * unigram["a"], rel=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_context_sums_to_one(order: int) -> None:
    lm = estimate(TOY, order=order).lm
    contexts = [[], [BOS], ["a"], ["b"], ["c"], [BOS, "a"], ["a", "b"], ["b", "c"], ["c", "c"], [UNK]]
    for history in contexts:
        assert distribution_sum(lm, history) == pytest.approx(1.0, abs=1e-12), history


def test_pruned_model_still_sums_to_one() -> None:
    lm = estimate(TOY * 3 + [["a", "b", "c"]], order=3, min_count=2).lm
    assert ("a", "b", "c") not in lm.probs  # seen once: left out
    for history in ([BOS, "a"], ["a", "b"], ["b", "c"]):
        assert distribution_sum(lm, history) == pytest.approx(1.0, abs=1e-12)


def test_corpus_lm_sums_to_one_and_prefers_in_domain_word_orders(corpus_lm: NgramLM) -> None:
    for history in ([BOS], [BOS, "set"], ["set", "a"], ["call"], [UNK], ["call", UNK], ["zebra", "crossing"]):
        mapped = [corpus_lm.map_word(w) if w != BOS else w for w in history]
        assert distribution_sum(corpus_lm, mapped) == pytest.approx(1.0, abs=1e-9), history
    good = corpus_lm.sentence_ln("set a timer for ten minutes".split())
    shuffled = corpus_lm.sentence_ln("timer a minutes set ten for".split())
    assert good > shuffled + 10


def test_bad_sentences_are_refused() -> None:
    with pytest.raises(ValueError, match="no sentences"):
        estimate([])
    with pytest.raises(ValueError, match="<s>"):
        estimate([["a", "</s>"]])


# ------------------------------------------------------------------------------------------ ARPA


def arpa_text(lm: NgramLM) -> str:
    out = io.StringIO()
    write_arpa(lm, out, header=["a comment"])
    return out.getvalue()


def test_arpa_round_trips(corpus_lm: NgramLM) -> None:
    text = arpa_text(corpus_lm)
    assert text.startswith("# a comment\n\n\\data\\\n") and text.endswith("\\end\\\n")
    parsed = parse_arpa(text.splitlines())
    assert parsed.order == 3 and parsed.counts() == corpus_lm.counts()
    assert arpa_text(parsed) == text  # written, read and written again: the same bytes
    assert set(parsed.probs) == set(corpus_lm.probs) and set(parsed.backoffs) <= set(corpus_lm.backoffs)
    for ngram, value in corpus_lm.probs.items():
        assert parsed.probs[ngram] == pytest.approx(value, abs=6e-7)
    sentence = "remind me to call the plumber tomorrow at nine".split()
    assert parsed.sentence_ln(sentence) == pytest.approx(corpus_lm.sentence_ln(sentence), abs=1e-4)


def test_arpa_layout_is_standard(corpus_lm: NgramLM) -> None:
    lines = arpa_text(corpus_lm).splitlines()
    counts = corpus_lm.counts()
    assert [f"ngram {n}={counts[n]}" for n in (1, 2, 3)] == lines[3:6]
    section = lines.index("\\3-grams:")
    trigram = lines[section + 1].split("\t")
    assert len(trigram) == 2 and len(trigram[1].split()) == 3 and float(trigram[0]) < 0  # no back-off at the top
    assert any(line.startswith("-99\t<s>\t") for line in lines)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no data here\n", "no \\\\data\\\\ section"),
        ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\ta\n\\end\\\n", "'ngram 1=2' but 1"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\n-x\ta\n\\end\\\n", ":5: '-x' is not a number"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\n0.5\ta\n\\end\\\n", "must be <= 0"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\ta\n", "no \\\\end\\\\ line"),
        ("\\data\\\nngram 1=1\nngram 2=1\n\n\\1-grams:\n-1\ta\n\n\\2-grams:\n-1\tb a\n\\end\\\n", "context 'b'"),
    ],
)
def test_malformed_arpa_is_refused_with_the_place(text: str, message: str) -> None:
    with pytest.raises(ArpaError, match=message):
        parse_arpa(text.splitlines(), "bad.arpa")


def test_unreadable_file_is_an_arpa_error(tmp_path: Path) -> None:
    with pytest.raises(ArpaError, match="cannot read"):
        read_arpa(tmp_path / "missing.arpa")


# ------------------------------------------------------------------------------------------ names


def test_names_are_one_class_seen_or_not(corpus_lm: NgramLM, name_words: dict[str, Any]) -> None:
    held, train = name_words["held_out"], name_words["train"]
    assert held not in corpus_lm.vocabulary and train not in corpus_lm.vocabulary
    assert corpus_lm.has_unk
    # A name the corpus never had costs exactly what a name it had costs ...
    assert corpus_lm.sentence_ln(["call", held]) == corpus_lm.sentence_ln(["call", train])
    # ... and far less than the in-vocabulary words that could take its place after "call".
    for other in ("timer", "the", "off"):
        assert corpus_lm.sentence_ln(["call", held]) > corpus_lm.sentence_ln(["call", other]) + 3
    # The class has its places: a name fits after "to call", hardly after "set a".
    assert corpus_lm.log10_prob(UNK, ["to", "call"]) > corpus_lm.log10_prob(UNK, ["set", "a"]) + 2


def test_name_class_mapping_keeps_common_words() -> None:
    from training.text_corpus import Entity, Utterance

    call = Utterance("call will smith", (Entity("contact", "will smith", 5, 15),))
    lamp = Utterance("turn on maria's lamp", (Entity("appliance", "maria's lamp", 8, 20),))
    plain = Utterance("i will be late", ())
    mapper = NameClassMapper.for_utterances([call, lamp, plain], ["will", "smith", "maria"])
    assert mapper.map(call) == ["call", "will", UNK]  # "will" is also an ordinary word here
    assert mapper.map(lamp) == ["turn", "on", UNK, "lamp"]
    assert mapper.map(plain) == ["i", "will", "be", "late"]


# ------------------------------------------------------------------------------------------ build


def test_build_lm_command_is_reproducible(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a" / "lm.arpa", tmp_path / "b" / "lm.arpa"
    assert main(["--out", str(first), "--sentences", "400", "--seed", "3"]) == 0
    assert main(["--out", str(second), "--sentences", "400", "--seed", "3"]) == 0
    assert "400 sentences" in capsys.readouterr().out
    def body(path: Path) -> list[str]:  # all but the line naming the output file
        return [line for line in path.read_text().splitlines() if not line.startswith("# built by")]

    assert body(first) == body(second)
    lm = read_arpa(first)
    assert lm.order == 3 and lm.has_unk


def test_shipped_lm_is_small_valid_and_documented() -> None:
    if not SHIPPED.exists():
        pytest.skip(f"{SHIPPED} is not built (python -m rescorer.build_lm --out models/rescorer/lm.arpa)")
    from training.text_corpus import corpus_split

    size = SHIPPED.stat().st_size
    assert size < 2_000_000
    lm = read_arpa(SHIPPED)
    assert lm.order == 3 and lm.has_unk
    assert not lm.vocabulary & corpus_split().held_out_words  # held-out names never reached the model
    readme = (SHIPPED.parent / "README.md").read_text()
    counts = lm.counts()
    for n in (1, 2, 3):
        assert re.search(rf"\b{n}-grams\D*{counts[n]:,}\b", readme), f"README does not give {counts[n]:,} {n}-grams"
    assert f"{size:,} bytes" in readme
    assert "python -m rescorer.build_lm --out models/rescorer/lm.arpa" in readme
    history = [BOS]
    assert math.isclose(distribution_sum(lm, history), 1.0, abs_tol=1e-4)

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from daemon.textnorm import ALPHABET
from training import text_corpus
from training.text_corpus import (
    MAX_WORDS,
    MIN_WORDS,
    SLOTS_DIR,
    CorpusSplit,
    Entity,
    Utterance,
    corpus_split,
    generate,
    holdout_entities,
    romanize_hangul,
    template_count,
    template_groups,
    violates_holdout,
)

N_CHECK = 20000


@pytest.fixture(scope="module")
def split() -> CorpusSplit:
    return corpus_split()


@pytest.fixture(scope="module")
def train_corpus() -> list[Utterance]:
    return generate(N_CHECK, "train", seed=0)


@pytest.fixture(scope="module")
def test_corpus() -> list[Utterance]:
    return generate(5000, "test", seed=0)


def _phrases(words: list[str], max_n: int) -> set[str]:
    return {" ".join(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)}


def test_generate_is_deterministic() -> None:
    assert generate(300, "train", seed=5) == generate(300, "train", seed=5)
    assert generate(300, "test", seed=5) == generate(300, "test", seed=5)
    assert generate(300, "train", seed=5) != generate(300, "train", seed=6)
    assert generate(300, "train", seed=5) != generate(300, "test", seed=5)
    # A longer run starts with the shorter one.
    assert generate(500, "train", seed=5)[:300] == generate(300, "train", seed=5)


def test_generate_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        generate(1, "dev", seed=0)
    with pytest.raises(ValueError, match="n must be"):
        generate(-1, "train", seed=0)
    assert generate(0, "train", seed=0) == []


def test_sizes(split: CorpusSplit) -> None:
    assert template_count() >= 100
    assert len(template_groups()) >= 10
    assert len(split.train_names) >= 5000
    assert len(split.test_names) >= 500
    assert len(split.train_appliances) >= 500
    assert len(split.test_appliances) >= 50
    origins = {line.split("\t")[1] for line in (SLOTS_DIR / "last_names.tsv").read_text().splitlines()[1:]}
    assert len(origins) >= 30


def test_split_is_disjoint(split: CorpusSplit) -> None:
    assert not set(split.train_names) & set(split.test_names)
    assert not set(split.train_appliances) & set(split.test_appliances)
    for name in split.test_names:
        assert any(w in split.held_out_words for w in name.split()), name
    for name in split.train_names:
        assert not any(w in split.held_out_words for w in name.split()), name


def test_no_held_out_name_or_appliance_in_training(train_corpus: list[Utterance], split: CorpusSplit) -> None:
    test_names = set(split.test_names)
    test_appliances = set(split.test_appliances)
    longest = max(len(p.split()) for p in (*test_names, *test_appliances))
    for utterance in train_corpus:
        words = [w.removesuffix("'s") for w in utterance.words]
        assert not split.held_out_words & set(words), utterance.text
        phrases = _phrases(words, longest)
        assert not phrases & test_names, utterance.text
        assert not phrases & test_appliances, utterance.text
        assert not violates_holdout(utterance.text)


def test_test_sentences_use_only_held_out_entities(test_corpus: list[Utterance], split: CorpusSplit) -> None:
    contacts = appliances = 0
    for utterance in test_corpus:
        for entity in utterance.entities:
            if entity.kind == "contact":
                contacts += 1
                assert split.held_out_words & set(entity.text.split()), entity.text
            else:
                appliances += 1
                owner, _, _ = entity.text.partition("'s ")
                held_out_owner = owner != entity.text and split.held_out_words & set(owner.split())
                assert entity.text in split.test_appliances or held_out_owner, entity.text
    assert contacts > 1000 and appliances > 1000
    assert any(violates_holdout(u.text) for u in test_corpus)


def test_entity_spans_match_text(train_corpus: list[Utterance], test_corpus: list[Utterance]) -> None:
    kinds: set[str] = set()
    for utterance in [*train_corpus, *test_corpus]:
        previous_end = -1
        for entity in utterance.entities:
            kinds.add(entity.kind)
            assert utterance.text[entity.start : entity.end] == entity.text
            assert entity.start > previous_end
            # Entities are whole words (a possessive "'s" may follow a contact).
            assert entity.start == 0 or utterance.text[entity.start - 1] == " "
            rest = utterance.text[entity.end :]
            assert rest == "" or rest.startswith(" ") or rest.startswith("'s")
            previous_end = entity.end
    assert kinds == {"contact", "appliance"}


def test_sentence_lengths_and_variety(train_corpus: list[Utterance]) -> None:
    lengths = [len(u.words) for u in train_corpus]
    assert min(lengths) >= MIN_WORDS and max(lengths) <= MAX_WORDS
    assert 6 <= sum(lengths) / len(lengths) <= 10
    assert len({u.text for u in train_corpus}) > 0.8 * len(train_corpus)
    assert all(set(u.text) <= set(ALPHABET) for u in train_corpus)
    with_entities = sum(1 for u in train_corpus if u.entities)
    assert 0.5 < with_entities / len(train_corpus) < 0.8


def test_corpus_covers_every_intent(train_corpus: list[Utterance]) -> None:
    text = "\n".join(u.text for u in train_corpus)
    for phrase in ("video call", "text", "percent", "degrees", "timer", "alarm", "remind me", "volume",
                   "weather", "lock", "open", "is the", "o'clock", " p m", "please"):  # fmt: skip
        assert phrase in text, phrase


def test_utterance_round_trip(train_corpus: list[Utterance]) -> None:
    for utterance in train_corpus[:200]:
        data = json.loads(json.dumps(utterance.to_dict()))
        assert Utterance.from_dict(data) == utterance


def test_utterance_rejects_bad_spans() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Utterance("call mum", (Entity("contact", "dad", 5, 8),))
    with pytest.raises(ValueError, match="kind"):
        Entity("person", "mum", 5, 8)
    with pytest.raises(ValueError, match="span"):
        Entity("contact", "mum", 5, 9)
    with pytest.raises(ValueError, match="does not match"):
        Utterance.from_dict({"text": "call mum", "entities": [{"kind": "contact", "text": "mu", "start": 4,
                                                               "end": 6}]})  # fmt: skip


def test_holdout_entities(split: CorpusSplit) -> None:
    entities = holdout_entities()
    assert entities == {"contact": split.test_names, "appliance": split.test_appliances}


def test_template_errors_are_reported() -> None:
    with pytest.raises(ValueError, match="unknown slot"):
        text_corpus._check_template("call {contactt}", "here")
    with pytest.raises(ValueError, match="unbalanced"):
        text_corpus._check_template("(call|ring {contact}", "here")
    text_corpus._check_template("?{be} {the:light} on", "here")


def test_romanize_hangul() -> None:
    assert romanize_hangul("민준") == "minjun"
    assert romanize_hangul("서연") == "seoyeon"
    assert romanize_hangul("x") == "x"


def test_slot_files_are_reproducible(tmp_path: Path) -> None:
    faker = pytest.importorskip("faker", reason="faker (the train extra) builds the name lists")
    header = (SLOTS_DIR / "first_names.tsv").read_text(encoding="utf-8").splitlines()[0]
    if f"faker {faker.VERSION} " not in header:
        pytest.skip(f"the name lists were built with another faker version than {faker.VERSION}: {header}")
    counts = text_corpus.build_slot_files(tmp_path)
    assert counts["first_names"] > 5000 and counts["last_names"] > 5000
    for name in ("first_names.tsv", "last_names.tsv"):
        assert filecmp.cmp(tmp_path / name, SLOTS_DIR / name, shallow=False), (
            f"{name} differs from a fresh build: run `python -m training.text_corpus build-slots`"
        )


def test_slot_files_are_small() -> None:
    total = sum(p.stat().st_size for p in SLOTS_DIR.iterdir())
    assert total < 1_000_000

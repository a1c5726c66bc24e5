"""The vocabulary: a soft spelling prior for the beam search (daemon.vocabulary) and how the search uses it."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from competing_backend import TOKENS, CompetingBackend
from recognizer_model import shipped_model_dir

from daemon.bias import BiasGraph
from daemon.frontend import Frontend
from daemon.modelcard import ModelError, load_card, sha256_file
from daemon.recognizer import VOCABULARY_FILE, DecodeConfig, Recognizer, vocabulary_with_bias
from daemon.vocabulary import OFF, ROOT, Vocabulary


def _walk(vocab: Vocabulary, text: str) -> list[bool]:
    """Whether each label of ``text`` made the word in progress leave the vocabulary."""
    state, left = ROOT, []
    for label in TOKENS.encode(text):
        state, out = vocab.advance(state, label)
        left.append(out)
    return left


def test_a_word_leaves_the_vocabulary_once_at_the_first_label_no_known_word_continues_with() -> None:
    vocab = Vocabulary(["lights", "light", "lamp", "ellie's"], TOKENS)
    assert len(vocab) == 4
    assert "light" in vocab and "ellie's" in vocab and "lig" not in vocab and "likhts" not in vocab
    # "my" is unknown from its first letter; "likhts" at its "k", once; "lamp" is known.
    assert _walk(vocab, "my likhts lamp") == [True, False, False, False, False, True, False, False, False, False,
                                             False, False, False, False]
    # A word that ends as the beginning of known words ("lig") leaves at its end: the space, or finishing.
    assert _walk(vocab, "lig lamp")[3] is True
    state = ROOT
    for label in TOKENS.encode("lig"):
        state, _ = vocab.advance(state, label)
    assert vocab.unfinished(state) and not vocab.unfinished(ROOT) and not vocab.unfinished(OFF)


def test_bias_words_join_a_copy_and_the_copy_is_made_once_per_list() -> None:
    vocab = Vocabulary(["call", "the"], TOKENS)
    extended = vocab.with_words(["siobhan", "okafor", "zoë"])  # a word the table cannot spell is skipped
    assert "siobhan" in extended and "okafor" in extended and "siobhan" not in vocab
    graph = BiasGraph.from_entries([("Siobhan Okafor", "contact", 1.0)], TOKENS)
    first = vocabulary_with_bias(vocab, graph.initial_state())
    assert first is not None and "siobhan" in first and "okafor's" in first  # the possessive form too
    assert vocabulary_with_bias(vocab, graph.initial_state()) is first
    assert vocabulary_with_bias(vocab, None) is vocab
    assert vocabulary_with_bias(None, graph.initial_state()) is None


def test_a_vocabulary_file_with_a_character_the_model_cannot_spell_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vocabulary.txt"
    path.write_text("lamp\nkitchen\nzoë\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocabulary.txt: the word 'zoë' has a character the token table lacks"):
        Vocabulary.load(path, TOKENS)
    with pytest.raises(ValueError, match="cannot read the vocabulary"):
        Vocabulary.load(tmp_path / "missing.txt", TOKENS)


def _decode(backend: CompetingBackend, vocab: Vocabulary | None, penalty: float = 2.0,
            bias: BiasGraph | None = None) -> str:
    decode = DecodeConfig(beam=4, max_symbols=3, vocabulary_penalty=penalty)
    recognizer = Recognizer(backend, TOKENS, Frontend(), decode, vocabulary=vocab)
    stream = recognizer.stream(bias.initial_state() if bias else None)
    stream.accept_features(np.zeros((6 * backend.frames, 40), dtype=np.float32))
    stream.finalize()
    return stream.text


VOCAB = ["turn", "on", "my", "lights", "the"]


def test_the_search_spells_a_known_word_where_the_acoustics_slightly_prefer_a_non_word() -> None:
    assert _decode(CompetingBackend("my likhts", "my lights", margin=1.0), None) == "my likhts"
    assert _decode(CompetingBackend("my likhts", "my lights", margin=1.0), Vocabulary(VOCAB, TOKENS)) == "my lights"
    # Off (penalty 0), the acoustics decide again.
    assert _decode(CompetingBackend("my likhts", "my lights", margin=1.0), Vocabulary(VOCAB, TOKENS), 0.0) == \
        "my likhts"


def test_a_word_the_model_hears_clearly_is_still_spelled_whatever_it_is() -> None:
    # The acoustics prefer the unknown name by more than the penalty: it stays.
    vocab = Vocabulary(["call", "nosy"], TOKENS)
    assert _decode(CompetingBackend("call ngozi", "call nosy", margin=4.0), vocab) == "call ngozi"
    assert _decode(CompetingBackend("call ngozi", "call nosy", margin=1.0), vocab) == "call nosy"


def test_an_unfinished_last_word_pays_the_penalty_when_the_utterance_ends() -> None:
    # "turn on the ligh" is a prefix of known words all along; only the end shows it is not a word.
    assert _decode(CompetingBackend("turn on the ligh", "turn on the lights", margin=1.0),
                   Vocabulary(VOCAB, TOKENS)) == "turn on the lights"


def test_the_names_of_the_bias_list_are_not_penalised() -> None:
    vocab = Vocabulary(["call", "nosy"], TOKENS)
    backend = CompetingBackend("call ngozi", "call nosy", margin=1.0)
    assert _decode(backend, vocab) == "call nosy"
    graph = BiasGraph.from_entries([("Ngozi", "contact", 0.0)], TOKENS)  # no boost: only the vocabulary
    assert _decode(CompetingBackend("call ngozi", "call nosy", margin=1.0), vocab, bias=graph) == "call ngozi"


def test_the_shipped_model_loads_its_vocabulary_and_refuses_a_vocabulary_it_cannot_spell(tmp_path: Path) -> None:
    shipped = shipped_model_dir()
    assert shipped is not None, "models/recognizer is part of the repository"
    recognizer = Recognizer.load(shipped)
    assert recognizer.vocabulary is not None and len(recognizer.vocabulary) > 1000
    assert "kitchen" in recognizer.vocabulary and "kichen" not in recognizer.vocabulary
    broken = tmp_path / "recognizer"
    shutil.copytree(shipped, broken)
    (broken / VOCABULARY_FILE).write_text("kitchen\nzoë\n", encoding="utf-8")
    card = load_card(broken, verify=False)
    replace(card, files={**card.files, VOCABULARY_FILE: sha256_file(broken / VOCABULARY_FILE)}).save(broken)
    with pytest.raises(ModelError, match=r"vocabulary.txt: the word 'zoë'"):
        Recognizer.load(broken)

"""Verified name substitution: the transducer forward against brute force, candidates, and the n-best it makes."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from competing_backend import CompetingBackend

from daemon import bias_verify
from daemon.bias import BiasGraph
from daemon.bias_verify import (
    JointModel,
    NameIndex,
    TransducerScorer,
    bounded_edit_distance,
    edit_distance,
    lexicon_of,
    phonetic_key,
    transducer_alignments,
    verify_names,
)
from daemon.frontend import Frontend
from daemon.hypothesis import Hypothesis
from daemon.lattice import Lattice
from daemon.messages import BiasSet
from daemon.recognizer import DecodeConfig, FloatArray, Recognizer, TransducerBackend
from daemon.textnorm import ALPHABET
from daemon.tflite_transducer import TfliteTransducer
from daemon.tokens import TokenTable

TOKENS = TokenTable.from_alphabet(ALPHABET)


# --------------------------------------------------------------------------------------------- the forward


class TinyBackend:
    """A random little transducer: an RNN-like predictor and a tanh joiner over a 5-label vocabulary.
    Counts predictor calls, to check that each prefix is predicted once."""

    vocab = 5
    dim = 4

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.embed = rng.normal(size=(self.vocab, self.dim)).astype(np.float32)
        self.out = rng.normal(size=(self.dim, self.vocab)).astype(np.float32) * 1.5
        self.predict_calls = 0

    def initial_predictor_state(self) -> tuple[FloatArray, FloatArray]:
        return np.zeros(self.dim, dtype=np.float32), np.zeros(self.dim, dtype=np.float32)

    def predict(self, token: int, h: FloatArray, c: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        self.predict_calls += 1
        new = np.tanh(0.7 * h + self.embed[token]).astype(np.float32)
        return new, new, c

    def join(self, enc: FloatArray, preds: FloatArray) -> FloatArray:
        return (np.tanh(enc[None, :] + preds) @ self.out).astype(np.float32)


def _log_probs(model: JointModel, enc: FloatArray, prefix: Sequence[int], t: int) -> np.ndarray:
    h, c = model.initial_predictor_state()
    out, h, c = model.predict(0, h, c)
    for token in prefix:
        out, h, c = model.predict(token, h, c)
    logits = model.join(enc[t], out[None])[0].astype(np.float64)
    return logits - np.logaddexp.reduce(logits)


def brute_force(model: JointModel, enc: FloatArray, seq: Sequence[int]) -> tuple[float, tuple[int, ...]]:
    """Every alignment spelled out: T blanks and U labels in any order, the last step a blank."""
    n_frames, n_labels = len(enc), len(seq)
    totals = []
    best: tuple[float, tuple[int, ...]] = (-np.inf, ())
    for label_steps in itertools.combinations(range(n_frames + n_labels - 1), n_labels):
        t = u = 0
        score = 0.0
        frames = []
        for step in range(n_frames + n_labels):
            logp = _log_probs(model, enc, seq[:u], t)
            if step in label_steps:
                score += logp[seq[u]]
                frames.append(t)
                u += 1
            else:
                score += logp[0]
                t += 1
        totals.append(score)
        best = max(best, (score, tuple(frames)))
    return float(np.logaddexp.reduce(totals)), best[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_equals_the_sum_over_every_alignment(seed: int) -> None:
    model = TinyBackend(seed)
    rng = np.random.default_rng(100 + seed)
    enc = rng.normal(size=(4, TinyBackend.dim)).astype(np.float32)
    sequences = [(), (1,), (2, 3), (2, 3, 1), (4, 4, 1, 2), (1, 2, 3, 4, 1)]
    alignments = transducer_alignments(model, enc, sequences)
    for seq, alignment in zip(sequences, alignments, strict=True):
        total, frames = brute_force(model, enc, seq)
        assert alignment.log_likelihood == pytest.approx(total, abs=1e-4)
        assert alignment.frames == frames  # the back-trace finds the best alignment
        assert len(alignment.token_scores) == len(seq)
        assert all(s <= 0.0 for s in alignment.token_scores)


def test_the_best_alignment_scores_are_the_labels_on_it() -> None:
    model = TinyBackend(3)
    enc = np.random.default_rng(7).normal(size=(5, TinyBackend.dim)).astype(np.float32)
    seq = (3, 1, 2)
    (alignment,) = transducer_alignments(model, enc, [seq])
    for u, (token, frame) in enumerate(zip(seq, alignment.frames, strict=True)):
        assert alignment.token_scores[u] == pytest.approx(_log_probs(model, enc, seq[:u], frame)[token], abs=1e-5)
    assert list(alignment.frames) == sorted(alignment.frames)


def test_each_prefix_is_predicted_once_and_later_calls_reuse_the_grid() -> None:
    model = TinyBackend(4)
    enc = np.random.default_rng(8).normal(size=(3, TinyBackend.dim)).astype(np.float32)
    scorer = TransducerScorer(model, enc)
    first = scorer.log_likelihoods([(1, 2, 3), (1, 2, 4)])
    assert model.predict_calls == 1 + 4  # the start, then 1, 12, 123, 124
    again = scorer.log_likelihoods([(1, 2, 4), (1, 2)])
    assert model.predict_calls == 5
    assert again[0] == pytest.approx(first[1])
    fresh = TransducerScorer(TinyBackend(4), enc).log_likelihoods([(1, 2)])
    assert again[1] == pytest.approx(fresh[0])


def test_a_prediction_cache_from_the_search_is_used_and_filled() -> None:
    model = TinyBackend(5)
    enc = np.random.default_rng(9).normal(size=(3, TinyBackend.dim)).astype(np.float32)
    h, c = model.initial_predictor_state()
    cache: dict[tuple[int, ...], tuple[FloatArray, FloatArray, FloatArray]] = {(): model.predict(0, h, c)}
    cache[(2,)] = model.predict(2, cache[()][1], cache[()][2])
    calls = model.predict_calls
    TransducerScorer(model, enc, cache).log_likelihoods([(2, 3)])
    assert model.predict_calls == calls + 1
    assert (2, 3) in cache


def test_no_frames_is_an_error() -> None:
    with pytest.raises(ValueError, match="no encoder frames"):
        TransducerScorer(TinyBackend(0), np.zeros((0, TinyBackend.dim), dtype=np.float32))


# --------------------------------------------------------------------------------------------- candidates


def test_phonetic_keys_bring_spellings_of_one_sound_together() -> None:
    assert phonetic_key("siobhan okafor") == "sabanakafar"
    assert phonetic_key("shivonaka for") == "savanakafar"
    assert phonetic_key("phillip") == phonetic_key("filip")
    assert phonetic_key("siobhan's") == "sabans"
    assert edit_distance(phonetic_key("siobhan okafor"), phonetic_key("shivonaka for")) == 1


def test_bounded_edit_distance_agrees_with_the_full_table() -> None:
    rng = random.Random(3)
    for _ in range(500):
        a = "".join(rng.choice("abst") for _ in range(rng.randint(0, 9)))
        b = "".join(rng.choice("abst") for _ in range(rng.randint(0, 9)))
        limit = rng.randint(0, 4)
        full = edit_distance(a, b)
        assert bounded_edit_distance(a, b, limit) == min(full, limit + 1), (a, b, limit)


def index_of(contacts: Sequence[str] = (), appliances: Sequence[str] = ()) -> NameIndex:
    graph = BiasGraph.from_document(BiasSet.of(contacts, appliances), TOKENS, 1.0)
    return NameIndex(p.text for p in graph.phrases)


def test_a_name_spelt_roughly_is_found_and_put_in_place() -> None:
    index = index_of(["Dr Siobhan Okafor", "Ana"], ["the aquarium pump"])
    (sub,) = index.find(["call doctor shivonaka for please"], 0.34, 4)
    assert sub.phrase == "doctor siobhan okafor"
    assert (sub.hypothesis, sub.start, sub.end) == (0, 1, 4)
    assert sub.text == "call doctor siobhan okafor please"
    assert sub.distance == pytest.approx(1 / len("daktarsabanakafar"))


def test_no_substitution_when_no_entry_is_close() -> None:
    index = index_of(["Siobhan Okafor", "Bartholomew"], ["the aquarium pump"])
    assert index.find(["turn on the kitchen light", "what time is it"], 0.34, 4) == []
    assert index.find([""], 0.34, 4) == []
    assert index_of().find(["call shivon"], 0.34, 4) == []


def test_a_name_already_said_is_left_alone() -> None:
    index = index_of(["Siobhan"])
    assert index.find(["call siobhan"], 0.5, 4) == []


def test_possessives_only_for_a_span_ending_in_s() -> None:
    graph = BiasGraph.from_document(BiasSet.of(["Siobhan"]), TOKENS, 1.0, possessives=True)
    index = NameIndex(p.text for p in graph.phrases)
    assert [s.phrase for s in index.find(["call shivon"], 0.34, 4)] == ["siobhan"]
    assert index.find(["shivons lamp"], 0.34, 4)[0].text == "siobhan's lamp"


def test_closest_first_one_span_per_phrase_and_the_limit() -> None:
    index = index_of(["Marta", "Martha", "Martin", "Marten"])
    found = index.find(["call marta now", "call marty now"], 0.5, 10)
    assert found[0].phrase == "martha"  # "marta" is already said; "martha" sounds the same
    assert len({s.phrase for s in found}) == len(found)
    assert [s.distance for s in found] == sorted(s.distance for s in found)
    assert len(index.find(["call marta now"], 0.5, 1)) == 1


def reference_find(phrases: Sequence[str], text: str, max_distance: float) -> dict[str, float]:
    """Every span against every phrase, the full edit distance: the best distance of each phrase in range."""
    words = text.split()
    best: dict[str, float] = {}
    max_words = max(p.count(" ") + 1 for p in phrases)
    for start in range(len(words)):
        for n in range(1, min(max_words + 1, len(words) - start) + 1):
            span = " ".join(words[start : start + n])
            for phrase in phrases:
                key = phonetic_key(phrase)
                if (len(key) < 3 or span == phrase or abs(min(phrase.count(" ") + 1, 3) - min(n, 3)) > 1
                        or (phrase.endswith("'s") and not span.endswith("s"))):
                    continue
                distance = edit_distance(phonetic_key(span), key) / len(key)
                if distance <= max_distance:
                    best[phrase] = min(best.get(phrase, 1.0), distance)
    return best


def test_the_letter_pair_filter_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bias_verify, "PRESELECT", 10**6)  # measure every pair the filter lets through
    rng = random.Random(11)
    syllables = ["ka", "ro", "mi", "sha", "ben", "to", "li", "an", "vo", "der", "ph", "y"]
    phrases = sorted({" ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
                               for _ in range(rng.randint(1, 2))) for _ in range(60)})
    index = NameIndex(phrases)
    for _ in range(40):
        text = " ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
                        for _ in range(rng.randint(1, 5)))
        found = index.find([text], 0.4, 1000)
        expected = reference_find(phrases, text, 0.4)
        expected = {p: d for p, d in expected.items() if f" {p} " not in f" {text} "}
        assert {s.phrase: pytest.approx(s.distance) for s in found} == expected, text


# --------------------------------------------------------------------------------------------- the n-best


def graph(*contacts: str) -> BiasGraph:
    return BiasGraph.from_document(BiasSet.of(contacts), TOKENS, 1.5, possessives=False)


def decode(heard: str, other: str, margin: float, bias: BiasGraph | None, verify: bool,
           beam: int = 1) -> tuple[list[Hypothesis], CompetingBackend]:
    backend = CompetingBackend(heard, other, margin)
    model: TransducerBackend = backend
    recognizer = Recognizer(model, TOKENS, Frontend(), DecodeConfig(beam=beam, max_symbols=2, verify_bias=verify))
    stream = recognizer.stream(bias=bias.initial_state() if bias else None)
    stream.accept_features(np.zeros((6 * backend.frames, 40), dtype=np.float32))
    stream.finalize()
    return stream.nbest(), backend


def test_a_pruned_name_comes_back_when_the_audio_supports_it() -> None:
    g = graph("Siobhan")
    beam_only, _ = decode("call shivon", "call siobhan", 2.0, g, verify=False)
    assert beam_only[0].text == "call shivon"  # a beam of one kept the better-sounding spelling only
    verified, backend = decode("call shivon", "call siobhan", 2.0, g, verify=True)
    best = verified[0]
    assert best.text == "call siobhan"
    assert best.bias_score == pytest.approx(g.score_tokens(best.tokens)) == pytest.approx(1.5 * len("siobhan "))
    # The acoustic score is the forward log-likelihood of its tokens, and lower than the spelling heard: it
    # won on the bias, which stays apart.
    frames = np.arange(backend.frames, dtype=np.float32)[:, None]
    scorer = TransducerScorer(backend, frames)
    name, heard = scorer.log_likelihoods([best.tokens, TOKENS.encode("call shivon")])
    assert best.acoustic_score == pytest.approx(name)
    original = next(h for h in verified if h.text == "call shivon")
    assert original.acoustic_score == pytest.approx(heard)
    assert heard > best.acoustic_score
    assert original.bias_score == pytest.approx(beam_only[0].bias_score)
    assert sum(best.token_bias_scores) == pytest.approx(best.bias_score)
    assert len(best.token_frames) == len(best.tokens) == len(best.token_acoustic_scores)
    assert list(best.token_frames) == sorted(best.token_frames)


def test_no_unearned_credit_when_the_audio_does_not_support_the_name() -> None:
    g = graph("Siobhan")
    beam_only, _ = decode("call shivon", "call siobhan", 30.0, g, verify=False)
    verified, _ = decode("call shivon", "call siobhan", 30.0, g, verify=True)
    assert verified == beam_only  # nothing verified: the search's n-best, untouched


def test_without_a_close_entry_the_nbest_is_the_searchs() -> None:
    g = graph("Bartholomew")
    beam_only, _ = decode("call shivon", "call siobhan", 2.0, g, verify=False, beam=4)
    verified, _ = decode("call shivon", "call siobhan", 2.0, g, verify=True, beam=4)
    assert verified == beam_only


def test_verification_off_or_without_a_list_changes_nothing() -> None:
    plain, _ = decode("call shivon", "call siobhan", 2.0, None, verify=False)
    assert decode("call shivon", "call siobhan", 2.0, None, verify=True)[0] == plain
    assert lexicon_of(None) is None
    assert lexicon_of(graph("Siobhan").initial_state()) is not None


def test_the_verified_nbest_makes_a_lattice_with_the_bias_apart() -> None:
    verified, _ = decode("call shivon", "call siobhan", 2.0, graph("Siobhan"), verify=True)
    lattice = Lattice.from_nbest(verified, token_list=TOKENS.tokens, frame_shift_s=0.06, utterance_id="u",
                                 device_id="d", kind="final", seq=0, start_time=0.0, end_time=1.0)
    assert lattice.best is not None and lattice.best.text == "call siobhan"
    for entry, hyp in zip(lattice.nbest, verified, strict=True):
        assert entry.acoustic_score == pytest.approx(hyp.acoustic_score, abs=1e-3)
        assert entry.bias_score == pytest.approx(hyp.bias_score, abs=1e-3)
    for arc in lattice.arcs:
        assert 0.0 <= arc.start <= arc.end
    name_arc = next(a for a in lattice.arcs if a.word == "siobhan")
    assert name_arc.bias_score == pytest.approx(1.5 * len("siobhan "), abs=1e-3)


def test_verify_names_directly_keeps_originals_and_their_bias() -> None:
    backend = CompetingBackend("call shivon", "call siobhan", 2.0)
    frames = np.arange(backend.frames, dtype=np.float32)[:, None]
    g = graph("Siobhan")
    tokens = tuple(TOKENS.encode("call shivon"))
    original = Hypothesis("call shivon", tokens, tuple(range(len(tokens))), -3.0, 0.25, (), ())
    out = verify_names([original], frames, backend, TOKENS, g, max_distance=0.34, candidates=4)
    assert out is not None
    assert [h.text for h in out] == ["call siobhan", "call shivon"]
    assert out[1].bias_score == 0.25  # the original's own bonus
    assert out[1].acoustic_score != -3.0  # re-scored like everything else
    assert verify_names([original], frames, backend, TOKENS, g, max_distance=0.0, candidates=4) is None
    assert verify_names([original], frames, backend, TOKENS, g, max_distance=0.34, candidates=0) is None


# --------------------------------------------------------------------------------------------- on the TFLite model


def test_tflite_big_batches_match_small_ones_and_leave_the_search_joiner_small(
        recognizer_model: tuple[Path, bool]) -> None:
    recognizer = Recognizer.load(recognizer_model[0])
    backend = recognizer.backend
    assert isinstance(backend, TfliteTransducer)
    rng = np.random.default_rng(0)
    width = backend.joiner.input_shape("pred")[1]
    enc = rng.normal(size=width).astype(np.float32)
    preds = rng.normal(size=(150, width)).astype(np.float32)
    small_rows = backend.joiner.input_shape("pred")[0]
    big = backend.join(enc, preds)
    assert big.shape == (150, len(recognizer.tokens))
    assert backend.joiner.input_shape("pred")[0] == small_rows  # the search's joiner was not resized
    one_by_one = np.concatenate([backend.join(enc, preds[i : i + 4]) for i in range(0, 150, 4)])
    np.testing.assert_allclose(big, one_by_one, atol=1e-5)


def test_forward_on_the_tflite_model_equals_brute_force(recognizer_model: tuple[Path, bool]) -> None:
    recognizer = Recognizer.load(recognizer_model[0])
    backend = recognizer.backend
    assert isinstance(backend, TfliteTransducer)
    rng = np.random.default_rng(1)
    enc = rng.normal(size=(3, backend.joiner.input_shape("enc")[1])).astype(np.float32)
    sequences = [(), (5,), (3, 9), (1, 2, 1)]
    alignments = transducer_alignments(backend, enc, sequences)
    for seq, alignment in zip(sequences, alignments, strict=True):
        total, frames = brute_force(backend, enc, seq)
        assert alignment.log_likelihood == pytest.approx(total, abs=1e-3)
        assert alignment.frames == frames

"""Beam search logic, driven by a scripted backend whose joiner favours a known label sequence."""

from __future__ import annotations

import numpy as np
import pytest
from competing_backend import CompetingBackend

from daemon.frontend import Frontend, MeanNormConfig, RunningMeanNorm
from daemon.modelcard import ModelCard, ModelError
from daemon.recognizer import DecodeConfig, Recognizer, TransducerBackend, _Hyp, _unbiased_share, mean_norm_of
from daemon.textnorm import ALPHABET
from daemon.tokens import TokenTable

TOKENS = TokenTable.from_alphabet(ALPHABET)


class ScriptedBackend:
    """Frame t emits ``script[t]`` (labels, then blank). The predictor output encodes how many labels the
    hypothesis has, so the joiner knows which label comes next; a wrong prefix gets no support."""

    chunk_features = 6
    frame_shift_s = 0.06

    def __init__(self, script: list[list[int]]) -> None:
        self.script = script
        self.frame = -1

    def initial_encoder_state(self) -> np.ndarray:
        return np.zeros(1, dtype=np.float32)

    def encode(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.frame += 1
        return np.array([[float(self.frame)]], dtype=np.float32), state

    def initial_predictor_state(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(1, dtype=np.float32), np.zeros(1, dtype=np.float32)

    def predict(self, token: int, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
        emitted = h + (token != 0)
        return np.concatenate([emitted, c]), emitted, c

    def join(self, enc: np.ndarray, preds: np.ndarray) -> np.ndarray:
        frame = int(enc[0])
        labels_before = sum(len(s) for s in self.script[:frame])
        logits = np.full((len(preds), len(TOKENS)), -8.0, dtype=np.float32)
        for i, pred in enumerate(preds):
            done = int(pred[0]) - labels_before
            todo = self.script[frame] if frame < len(self.script) else []
            if 0 <= done < len(todo):
                logits[i, todo[done]] = 8.0
            else:
                logits[i, 0] = 8.0
        return logits


def _recognizer(script: list[list[int]], beam: int = 4) -> Recognizer:
    backend: TransducerBackend = ScriptedBackend(script)
    return Recognizer(backend, TOKENS, Frontend(), DecodeConfig(beam=beam, max_symbols=3))


def test_decodes_the_scripted_words_with_frame_times() -> None:
    text = "hi bo"
    ids = TOKENS.encode(text)
    script = [[ids[0], ids[1]], [ids[2]], [], [ids[3], ids[4]], []]
    stream = _recognizer(script).stream()
    stream.accept_features(np.zeros((6 * len(script), 40), dtype=np.float32))
    stream.finalize()
    best = stream.nbest()[0]
    assert best.text == text
    assert best.token_frames == (0, 0, 1, 3, 3)
    assert best.bias_score == 0.0
    assert best.acoustic_score > -0.1  # every step was near-certain
    assert stream.frames_decoded == len(script)


def test_more_labels_than_max_symbols_in_one_frame_cannot_all_be_emitted() -> None:
    ids = TOKENS.encode("abcde")
    stream = _recognizer([ids, []]).stream()
    stream.accept_features(np.zeros((12, 40), dtype=np.float32))
    stream.finalize()
    assert len(stream.nbest()[0].tokens) <= 3 + 3  # at most max_symbols per frame over two frames
    assert stream.nbest()[0].text != "abcde"


def test_nbest_is_sorted_and_distinct() -> None:
    ids = TOKENS.encode("ok")
    stream = _recognizer([[ids[0]], [ids[1]], []], beam=4).stream()
    stream.accept_features(np.zeros((18, 40), dtype=np.float32))
    stream.finalize()
    hyps = stream.nbest()
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    assert len({h.tokens for h in hyps}) == len(hyps)
    assert hyps[0].text == "ok"


def _hyp(text: str, acoustic: float, bias: float) -> _Hyp:
    zero = np.zeros(1, dtype=np.float32)
    return _Hyp(tuple(TOKENS.encode(text)), (), acoustic, bias, zero, zero, zero)


def test_with_a_bias_list_half_the_beam_is_kept_for_what_the_model_prefers() -> None:
    # Two hypotheses spelling names hold provisional credit and rank first by acoustic + bias; half the beam
    # goes to the two the model prefers on the acoustics alone.
    hyps = [_hyp("call jan", -3.0, 2.5), _hyp("call jani", -3.5, 2.5), _hyp("call jon", -1.0, 0.0),
            _hyp("call john", -1.2, 0.0), _hyp("call joan", -4.0, 0.0)]
    reserved = _unbiased_share(hyps, 4, lambda h: h.acoustic, biased=True)
    assert [TOKENS.decode(h.tokens) for h in reserved] == ["call jon", "call john"]
    assert _unbiased_share(hyps, 1, lambda h: h.acoustic, biased=True) == []  # a beam of one is all bias
    assert _unbiased_share(hyps, 4, lambda h: h.acoustic, biased=False) == []  # no list: the plain beam
    # Only what lies above the exploration bound is kept, even if that leaves the share short.
    above = _unbiased_share(hyps, 4, lambda h: h.acoustic, biased=True, above=-1.1)
    assert [TOKENS.decode(h.tokens) for h in above] == ["call jon"]


class RecordingBackend(ScriptedBackend):
    """Keeps every feature chunk the encoder is given."""

    def __init__(self) -> None:
        super().__init__([])
        self.chunks: list[np.ndarray] = []

    def encode(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.chunks.append(feats.copy())
        return super().encode(feats, state)


def test_the_encoder_gets_the_mean_normalised_features_the_model_was_trained_on() -> None:
    norm = MeanNormConfig(30.0, tuple(float(v) for v in np.linspace(-9.0, -3.0, 40)))
    samples = (np.sin(np.arange(16000) * 0.3) * 8000).astype(np.int16)
    feats = Frontend().compute(samples)
    n = len(feats) // 6 * 6
    for mean_norm, expected in ((None, feats[:n]), (norm, RunningMeanNorm(norm).apply(feats)[:n])):
        backend = RecordingBackend()
        stream = Recognizer(backend, TOKENS, Frontend(), mean_norm=mean_norm).stream()
        for i in range(0, len(samples), 1000):
            stream.accept_waveform(samples[i : i + 1000])
        assert np.array_equal(np.concatenate(backend.chunks), expected)


def test_a_card_with_a_bad_mean_norm_is_refused_with_the_reason() -> None:
    card = ModelCard(name="m", kind="recognizer", version="1", files={}, frontend={},
                     model={"mean_norm": {"frames": -1, "initial_mean": [0.0]}})
    with pytest.raises(ModelError, match=r"m: bad 'mean_norm' in the model card: .*frames > 0"):
        mean_norm_of(card)
    assert mean_norm_of(ModelCard(name="m", kind="recognizer", version="1", files={}, frontend={}, model={})) is None


def test_the_token_table_spells_an_apostrophe_only_inside_a_word() -> None:
    apostrophe, space = TOKENS.encode("' ")
    assert apostrophe in TOKENS.forbidden_after(0)  # nothing yet
    assert apostrophe in TOKENS.forbidden_after(space)
    assert TOKENS.forbidden_after(apostrophe) == {apostrophe, space}
    assert TOKENS.forbidden_after(TOKENS.encode("s")[0]) == frozenset()
    # An utterance that ended right after an apostrophe still reads as words.
    assert TOKENS.words(TOKENS.encode("ellie's lamp i'")) == ["ellie's", "lamp", "i"]


def test_the_search_never_spells_a_stray_apostrophe_even_where_the_acoustics_prefer_it() -> None:
    backend = CompetingBackend("i' lock", "i lock", margin=1.0)
    stream = Recognizer(backend, TOKENS, Frontend(), DecodeConfig(beam=4, max_symbols=3)).stream()
    stream.accept_features(np.zeros((6 * backend.frames, 40), dtype=np.float32))
    stream.finalize()
    assert stream.text == "i lock"
    for hyp in stream.nbest():
        spelled = TOKENS.decode(hyp.tokens)
        assert "' " not in spelled and not spelled.startswith("'"), spelled

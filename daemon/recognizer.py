"""Streaming RNN-T recognition: one :class:`Recognizer` holds the models, one stream per utterance.

A stream takes 16 kHz audio in any chunk size, computes log-mel features with the shared front end, runs
the encoder a chunk at a time (its state carried between chunks) and advances a beam search by one step per
encoder frame. The beam search is the standard transducer search limited to ``max_symbols`` labels per
frame: hypotheses that emit blank move on to the next frame; those that emit a label are extended (the
predictor runs once per new prefix and its output is cached) and may emit again in the same frame. Labels
the token table's spelling rule forbids (:meth:`TokenTable.forbidden_after`: an apostrophe only inside a
word) are never expanded. When the model ships its vocabulary (the words of its training text, plus those
of the stream's bias list: :mod:`daemon.vocabulary`), each word that leaves it costs
``DecodeConfig.vocabulary_penalty``, part of the hypothesis' acoustic (model) score.
Identical label sequences reached along different paths are merged by adding their probabilities.
Candidates that already score below the ``beam``-th finished hypothesis of the frame are dropped: emitting
more labels can only lower a score, so they could never enter the beam.

With ``DecodeConfig.verify_bias`` and a bias list, the n-best of a finished stream also goes through
acoustically verified name substitution (:mod:`daemon.bias_verify`); the stream then keeps the utterance's
encoder frames for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from daemon.bias_verify import BiasLexicon, lexicon_of, no_penalty, verify_names
from daemon.frontend import FeatureStream, Frontend, FrontendConfig, MeanNormConfig, RunningMeanNorm
from daemon.hypothesis import Hypothesis
from daemon.modelcard import ModelCard, ModelError, load_card
from daemon.tokens import TokenTable
from daemon.vocabulary import ROOT, Vocabulary

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
VOCABULARY_FILE = "vocabulary.txt"


class TransducerBackend(Protocol):
    """The three graphs of an RNN-T, run by TFLite on the device or by PyTorch in training."""

    chunk_features: int  # feature frames per encoder call
    frame_shift_s: float  # seconds per encoder output frame

    def initial_encoder_state(self) -> FloatArray: ...

    def encode(self, feats: FloatArray, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(chunk_features, n_mels) -> ((chunk_frames, joint_dim), new state)."""
        ...

    def initial_predictor_state(self) -> tuple[FloatArray, FloatArray]: ...

    def predict(self, token: int, h: FloatArray, c: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """One predictor step: (joint_dim,), h, c."""
        ...

    def join(self, enc: FloatArray, preds: FloatArray) -> FloatArray:
        """(joint_dim,), (N, joint_dim) -> logits (N, vocab)."""
        ...


class BiasState(Protocol):
    """Context-biasing hook: ``advance`` returns the new state and the score bonus for one more token."""

    def advance(self, token: int) -> tuple[BiasState, float]: ...

    def final_bonus(self) -> float:
        """Correction when a hypothesis ends here (withdraws credit for an unfinished partial match)."""
        ...


@dataclass(frozen=True)
class DecodeConfig:
    beam: int = 4  # hypotheses kept per frame
    # Labels per encoder frame at most. The causal model often waits, then emits a burst of characters in one
    # 60 ms frame: 3 cost 10 points of held-out WER against 4 or 5 (120 clean test utterances, same model).
    max_symbols: int = 5
    expand: int = 4  # labels tried per hypothesis and step
    nbest: int = 4  # hypotheses reported
    # Acoustically verified name substitution when the utterance ends (daemon.bias_verify): bias phrases that
    # sound like a span of the best hypothesis replace it if the transducer's forward log-likelihood plus the
    # bias says so. Off by default: with a 1,000-name list it adds about 55 % to the decode time of this
    # model (bench/bias.py: +56% with the fifth recogniser), over the 15 % the issue allows.
    verify_bias: bool = False
    # Largest edit distance of the phonetic keys, per character of the phrase's key. 0.5 (0.34 before) raised
    # entity accuracy with verification 2.3 to 4.5 points on five sets of held-out voices, the name-free WER
    # rise unchanged (python -m bench.bias --verify on --verify-distance D; README).
    verify_max_distance: float = 0.5
    verify_candidates: int = 4  # substitutions scored per utterance at most
    # With a bias list, half the beam is kept for the labels the model itself prefers (_unbiased_share),
    # explored down to this many nats below the acoustic score of the frame's (beam // 2)-th finished
    # hypothesis, the last that half could hold (python -m bench.bias --conditions clean,noise_10db
    # --explore-nats N, third recogniser): 3 nats gave entity accuracy 33.9%, named WER 36.3% and a name-free
    # WER rise of -0.05 points (300 distractors) at +11% decode time with 1,000 names (two runs: +11.4%,
    # +10.8%); 4 nats and 2 nats the same accuracy at +15% and +8.5%. The earlier bound, 4 nats below the
    # beam-th hypothesis, gave the same accuracy at +25%.
    bias_explore_nats: float = 3.0
    # Charged once per word that leaves the model's vocabulary (daemon.vocabulary), when the model ships one.
    vocabulary_penalty: float = 2.0


@dataclass
class _Hyp:
    tokens: tuple[int, ...]
    frames: tuple[int, ...]
    acoustic: float
    bias: float
    pred_out: FloatArray
    h: FloatArray
    c: FloatArray
    bias_state: BiasState | None = None
    token_acoustic: tuple[float, ...] = ()
    token_bias: tuple[float, ...] = ()
    word: int = ROOT  # state of the word in progress in the stream's vocabulary

    @property
    def score(self) -> float:
        return self.acoustic + self.bias


def _log_softmax(x: FloatArray) -> FloatArray:
    m = x.max(axis=-1, keepdims=True)
    shifted = x - m
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


T = TypeVar("T")


def _unbiased_share(items: Sequence[T], beam: int, acoustic: Callable[[T], float], biased: bool,
                    above: float = float("-inf")) -> list[T]:
    """The half of the beam kept for what the model itself prefers (best by ``acoustic``, which leaves out
    the bias, and above ``above``) when a bias list is in use; the rest of the beam is filled by acoustic +
    bias score.

    Biasing may steer the beam toward names but must not push out everything else: with the whole beam
    ranked by acoustic + bias, hypotheses earning provisional credit along names' prefixes crowded out the
    model's own choices, the right words lost the alternative alignments that merge into them, and
    utterances that name nobody came out as other sentences (300 distractor names: +2.5 WER points on the
    benchmark's name-free utterances). Without a bias list this is empty and the beam is the plain one.
    """
    if not biased:
        return []
    return sorted((i for i in items if acoustic(i) > above), key=acoustic, reverse=True)[: beam // 2]


def _merge(pool: dict[tuple[int, ...], _Hyp], hyp: _Hyp) -> None:
    """Add ``hyp`` to ``pool``, log-adding the acoustic score of an identical label sequence."""
    other = pool.get(hyp.tokens)
    if other is None:
        pool[hyp.tokens] = hyp
        return
    best, worse = (other, hyp) if other.acoustic >= hyp.acoustic else (hyp, other)
    best.acoustic = float(np.logaddexp(best.acoustic, worse.acoustic))
    pool[hyp.tokens] = best


def mean_norm_of(card: ModelCard) -> MeanNormConfig | None:
    """The feature mean normalisation a recogniser card asks for (cards without one predate it: none)."""
    norm = card.model.get("mean_norm")
    if norm is None:
        return None
    try:
        return MeanNormConfig.from_dict(norm)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{card.name}: bad 'mean_norm' in the model card: {exc}") from exc


class Recognizer:
    """Holds the models (built once); :meth:`stream` makes a cheap per-utterance stream."""

    def __init__(
        self,
        backend: TransducerBackend,
        tokens: TokenTable,
        frontend: Frontend,
        decode: DecodeConfig | None = None,
        card: ModelCard | None = None,
        mean_norm: MeanNormConfig | None = None,
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.backend = backend
        self.tokens = tokens
        self.frontend = frontend
        self.decode = decode or DecodeConfig()
        self.card = card
        self.mean_norm = mean_norm  # streaming mean normalisation of the features, when the model uses it
        self.vocabulary = vocabulary  # the words of the training text, when the model ships them

    @classmethod
    def load(cls, model_dir: Path, threads: int = 1, decode: DecodeConfig | None = None) -> Recognizer:
        """Load a model directory, refusing files whose sha256 does not match its card."""
        from daemon.tflite_transducer import TfliteTransducer

        card = load_card(model_dir, verify=True)
        backend = TfliteTransducer(model_dir, card, threads)
        tokens = TokenTable.load(model_dir / "tokens.json")
        frontend = Frontend(FrontendConfig.from_dict(card.frontend))
        vocabulary = None
        if VOCABULARY_FILE in card.files:
            try:
                vocabulary = Vocabulary.load(model_dir / VOCABULARY_FILE, tokens)
            except ValueError as exc:
                raise ModelError(str(exc)) from exc
        return cls(backend, tokens, frontend, decode, card, mean_norm_of(card), vocabulary)

    def with_decode(self, decode: DecodeConfig) -> Recognizer:
        """The same models (shared, not copied) with other search settings."""
        return Recognizer(self.backend, self.tokens, self.frontend, decode, self.card, self.mean_norm, self.vocabulary)

    @property
    def frame_shift_s(self) -> float:
        return self.backend.frame_shift_s

    @property
    def version(self) -> str:
        return f"{self.card.name}-{self.card.version}" if self.card else "unversioned"

    def stream(self, bias: BiasState | None = None) -> RecognizerStream:
        return RecognizerStream(self, bias)


@dataclass
class RecognizerStream:
    recognizer: Recognizer
    bias: BiasState | None = None
    frames_decoded: int = 0  # encoder frames consumed by the beam search
    samples_accepted: int = 0
    finished: bool = False
    _features: FeatureStream = field(init=False)
    _mean_norm: RunningMeanNorm | None = field(init=False, default=None)
    _pending: list[FloatArray] = field(init=False, default_factory=list)
    _state: FloatArray = field(init=False)
    _hyps: list[_Hyp] = field(init=False)
    _pred_cache: dict[tuple[int, ...], tuple[FloatArray, FloatArray, FloatArray]] = field(
        init=False, default_factory=dict
    )
    # For verifying names at the end (DecodeConfig.verify_bias): the bias list, and the encoder frames so far.
    _lexicon: BiasLexicon | None = field(init=False, default=None)
    _enc_frames: list[FloatArray] = field(init=False, default_factory=list)
    _verified: list[Hypothesis] | None = field(init=False, default=None)
    _vocabulary: Vocabulary | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        backend = self.recognizer.backend
        if self.recognizer.decode.vocabulary_penalty > 0:
            self._vocabulary = vocabulary_with_bias(self.recognizer.vocabulary, self.bias)
        if self.recognizer.decode.verify_bias:
            self._lexicon = lexicon_of(self.bias)
        self._features = self.recognizer.frontend.stream()
        if self.recognizer.mean_norm is not None:
            self._mean_norm = RunningMeanNorm(self.recognizer.mean_norm)
        self._state = backend.initial_encoder_state()
        h, c = backend.initial_predictor_state()
        out, h, c = backend.predict(0, h, c)
        self._pred_cache[()] = (out, h, c)
        self._hyps = [_Hyp((), (), 0.0, 0.0, out, h, c, self.bias)]

    # -- input ---------------------------------------------------------------------------------------
    def accept_waveform(self, samples: npt.NDArray[np.int16] | FloatArray) -> None:
        """Feed audio (16 kHz mono, int16 or float in [-1, 1)); decodes every complete chunk."""
        if self.finished:
            raise RuntimeError("stream already finalised")
        self.samples_accepted += len(samples)
        feats = self._features.accept(samples)
        if len(feats):
            self.accept_features(feats)

    def accept_features(self, feats: FloatArray) -> None:
        """Feed log-mel frames of the shared front end (normalised here when the model asks for it)."""
        feats = np.asarray(feats, dtype=np.float32)
        if self._mean_norm is not None:
            feats = self._mean_norm.apply(feats)
        self._pending.append(feats)
        buffered = np.concatenate(self._pending)
        size = self.recognizer.backend.chunk_features
        n_full = len(buffered) // size
        for i in range(n_full):
            self._encode_and_search(buffered[i * size : (i + 1) * size])
        self._pending = [buffered[n_full * size :]]

    def finalize(self) -> None:
        """Decode what is buffered, padding the last chunk with the quietest frame values seen in it."""
        if self.finished:
            return
        rest = np.concatenate(self._pending)
        if len(rest):
            size = self.recognizer.backend.chunk_features
            pad = np.repeat(rest.min(axis=0, keepdims=True), size - len(rest), axis=0)
            self._encode_and_search(np.concatenate([rest, pad]))
        self._pending = []
        self.finished = True

    # -- output --------------------------------------------------------------------------------------
    def nbest(self, n: int | None = None) -> list[Hypothesis]:
        """The best ``n`` hypotheses (default ``DecodeConfig.nbest``), best first. Once finalised, and with
        ``verify_bias``, they include the verified name substitutions of :mod:`daemon.bias_verify`."""
        n = n or self.recognizer.decode.nbest
        if self.finished and self._lexicon is not None:
            if self._verified is None:
                self._verified = self._verify_names()
            return self._verified[:n]
        return self._beam_nbest(n)

    def _verify_names(self) -> list[Hypothesis]:
        cfg = self.recognizer.decode
        beam = self._beam_nbest(cfg.nbest)
        if self._lexicon is None or not self._enc_frames:
            return beam
        vocab = self._vocabulary
        penalty = no_penalty if vocab is None else (lambda ids: cfg.vocabulary_penalty * vocab.words_outside(ids))
        verified = verify_names(beam, np.concatenate(self._enc_frames), self.recognizer.backend,
                                self.recognizer.tokens, self._lexicon, self._pred_cache,
                                max_distance=cfg.verify_max_distance, candidates=cfg.verify_candidates,
                                penalty=penalty)
        return beam if verified is None else verified

    def _beam_nbest(self, n: int) -> list[Hypothesis]:
        final = self.finished
        ranked = sorted(self._hyps, key=lambda h: self._final_score(h) if final else h.score, reverse=True)
        tokens = self.recognizer.tokens
        out: list[Hypothesis] = []
        seen: set[str] = set()
        for h in ranked:
            text = " ".join(tokens.words(h.tokens))
            if text in seen:  # label sequences differing only in spaces read the same: keep the best
                continue
            seen.add(text)
            bias = h.bias + (h.bias_state.final_bonus() if final and h.bias_state else 0.0)
            acoustic = h.acoustic - (self._unfinished_penalty(h) if final else 0.0)
            out.append(Hypothesis(text, h.tokens, h.frames, acoustic, bias, h.token_acoustic, h.token_bias))
            if len(out) == n:
                break
        return out

    @property
    def text(self) -> str:
        best = self.nbest(1)
        return best[0].text if best else ""

    def last_token_frame(self) -> int | None:
        """Encoder frame of the best hypothesis' last label (for end-pointing), or None if it has none."""
        best = max(self._hyps, key=lambda h: h.score)
        return best.frames[-1] if best.frames else None

    # -- search --------------------------------------------------------------------------------------
    def _final_score(self, h: _Hyp) -> float:
        return h.score + (h.bias_state.final_bonus() if h.bias_state else 0.0) - self._unfinished_penalty(h)

    def _unfinished_penalty(self, h: _Hyp) -> float:
        """The vocabulary penalty for a last word that is only the beginning of known words."""
        vocab = self._vocabulary
        return self.recognizer.decode.vocabulary_penalty if vocab is not None and vocab.unfinished(h.word) else 0.0

    def _encode_and_search(self, chunk: FloatArray) -> None:
        enc, self._state = self.recognizer.backend.encode(chunk, self._state)
        if self._lexicon is not None:
            self._enc_frames.append(enc)
        for frame in enc:
            self._search_frame(frame)
            self.frames_decoded += 1

    def _predicted(self, tokens: tuple[int, ...], parent: _Hyp) -> tuple[FloatArray, FloatArray, FloatArray]:
        cached = self._pred_cache.get(tokens)
        if cached is None:
            cached = self.recognizer.backend.predict(tokens[-1], parent.h, parent.c)
            self._pred_cache[tokens] = cached
        return cached

    def _search_frame(self, enc: FloatArray) -> None:
        cfg = self.recognizer.decode
        backend = self.recognizer.backend
        table = self.recognizer.tokens
        biased = self.bias is not None
        vocab = self._vocabulary
        finished: dict[tuple[int, ...], _Hyp] = {}
        frontier = self._hyps
        for symbol in range(cfg.max_symbols + 1):
            if not frontier:
                break
            logp = _log_softmax(backend.join(enc, np.stack([h.pred_out for h in frontier])))
            # (score, parent, label, its log probability less any vocabulary penalty, the vocabulary state after it)
            candidates: list[tuple[float, _Hyp, int, float, int]] = []
            for i, hyp in enumerate(frontier):
                _merge(finished, _Hyp(hyp.tokens, hyp.frames, hyp.acoustic + float(logp[i, 0]), hyp.bias,
                                      hyp.pred_out, hyp.h, hyp.c, hyp.bias_state, hyp.token_acoustic,
                                      hyp.token_bias, hyp.word))
                if symbol == cfg.max_symbols:
                    continue
                row = logp[i, 1:]
                forbidden = table.forbidden_after(hyp.tokens[-1] if hyp.tokens else 0)
                if forbidden:
                    row = row.copy()
                    row[[k - 1 for k in forbidden]] = -np.inf
                labels = np.argpartition(-row, cfg.expand - 1)[: cfg.expand] + 1
                for k in labels:
                    if k in forbidden:
                        continue
                    lp = float(logp[i, k])
                    word = ROOT
                    if vocab is not None:
                        word, left = vocab.advance(hyp.word, int(k))
                        lp -= cfg.vocabulary_penalty if left else 0.0
                    candidates.append((hyp.score + lp, hyp, int(k), lp, word))
            floor = self._beam_floor(finished, lambda h: h.score)
            # With a bias list, part of the beam goes to the labels the model itself prefers: see _unbiased_share.
            explore = floor
            if biased:  # the reserved half could not take a hypothesis below its own last place
                explore = self._beam_floor(finished, lambda h: h.acoustic, max(1, cfg.beam // 2))
                explore -= cfg.bias_explore_nats
            reserved = _unbiased_share(candidates, cfg.beam, lambda c: c[1].acoustic + c[3], biased, explore)
            extended: dict[tuple[int, ...], _Hyp] = {}
            for _, hyp, k, lp, word in reserved:
                tokens = (*hyp.tokens, k)
                extended[tokens] = self._extend(hyp, tokens, k, lp, word)
            taken = {id(c) for c in reserved}
            candidates = [c for c in candidates if c[0] > floor and id(c) not in taken]
            candidates.sort(key=lambda c: c[0], reverse=True)
            for _, hyp, k, lp, word in candidates:
                if len(extended) >= cfg.beam:
                    break
                tokens = (*hyp.tokens, k)
                if tokens in extended:
                    _merge(extended, self._extend(hyp, tokens, k, lp, word))
                    continue
                extended[tokens] = self._extend(hyp, tokens, k, lp, word)
            frontier = list(extended.values())
        kept = _unbiased_share(list(finished.values()), cfg.beam, lambda h: h.acoustic, biased)
        taken = {id(h) for h in kept}
        kept += sorted((h for h in finished.values() if id(h) not in taken), key=lambda h: h.score, reverse=True)
        self._hyps = sorted(kept[: cfg.beam], key=lambda h: h.score, reverse=True)

    def _beam_floor(self, finished: dict[tuple[int, ...], _Hyp], score: Callable[[_Hyp], float],
                    beam: int | None = None) -> float:
        """The ``score`` of the ``beam``-th best finished hypothesis (default: the beam's last; -inf while there
        are fewer)."""
        beam = beam or self.recognizer.decode.beam
        if len(finished) < beam:
            return float("-inf")
        return sorted((score(h) for h in finished.values()), reverse=True)[beam - 1]

    def _extend(self, hyp: _Hyp, tokens: tuple[int, ...], token: int, lp: float, word: int) -> _Hyp:
        out, h, c = self._predicted(tokens, hyp)
        bias_state, bonus = (hyp.bias_state.advance(token) if hyp.bias_state else (None, 0.0))
        return _Hyp(tokens, (*hyp.frames, self.frames_decoded), hyp.acoustic + lp, hyp.bias + bonus,
                    out, h, c, bias_state, (*hyp.token_acoustic, lp), (*hyp.token_bias, bonus), word)


def vocabulary_with_bias(vocabulary: Vocabulary | None, bias: BiasState | None) -> Vocabulary | None:
    """``vocabulary`` with the words of the bias list behind ``bias`` (built once per list)."""
    lexicon = lexicon_of(bias)
    if vocabulary is None or lexicon is None or not lexicon.phrases:
        return vocabulary
    return vocabulary.with_words_of(lexicon, lambda: {w for p in lexicon.phrases for w in p.text.split()})


def transcribe_samples(recognizer: Recognizer, samples: npt.NDArray[np.int16] | FloatArray,
                       bias: BiasState | None = None, chunk: int = 1600) -> list[Hypothesis]:
    """Decode a whole signal through the streaming path, ``chunk`` samples at a time (biased by ``bias``)."""
    stream = recognizer.stream(bias)
    for i in range(0, len(samples), chunk):
        stream.accept_waveform(samples[i : i + chunk])
    stream.finalize()
    return stream.nbest()


__all__: Sequence[str] = (
    "BiasState", "DecodeConfig", "Hypothesis", "Recognizer", "RecognizerStream", "TransducerBackend",
    "transcribe_samples",
)

"""Acoustically verified name substitution: a second biasing step, at the end of an utterance.

Biasing inside the beam search (:mod:`daemon.bias`) can only help a name the beam still holds, and a weak
acoustic model often spells an unseen name its own way ("doctor shivonaka for" for "doctor siobhan okafor")
and prunes the right spelling long before the bias graph could reward it. So once the utterance has ended:

1. **Candidates.** Every span of one to a few words of the best hypothesis is compared with every phrase of
   the bias list (the graph's phrases: normalised by :func:`daemon.textnorm.normalize`, with the possessive
   forms of contacts and appliances without their article). The comparison is an edit distance between
   *phonetic keys* (:func:`phonetic_key`: spaces and apostrophes dropped, common spellings of one sound
   merged, vowels alike, doubled letters single): "shivonaka for" and "siobhan okafor" become "savanakafar"
   and "sabanakafar", one edit apart. A phrase is a candidate for a span when the distance is at most
   ``max_distance`` times the length of the phrase's key; the ``candidates`` closest phrases (each at its
   closest span) replace their span. Spans of the other n-best entries are not used: a name put into a
   hypothesis the search ranked lower won on the bias alone over the best one too often (on the benchmark,
   it turned "what are my reminders" into an appliance).
2. **Scores that compare like with like.** The beam's acoustic score is the probability of one path (or of
   the few it merged). A candidate, and the hypothesis it came from, are instead scored by their *true*
   transducer log-likelihood given the utterance's encoder frames: the forward algorithm over the
   T × (U+1) grid, the log of the sum over every alignment of the labels to the frames
   (:class:`TransducerScorer`). The predictor runs once per distinct prefix (the search's cached outputs are
   reused), the joiner once per frame for all prefixes together.
3. **The bias stays apart.** A candidate is *verified* when its log-likelihood plus the bias graph's bonus
   for its tokens beats the same sum for the best hypothesis (with the bonus the search gave it). Only then
   is the whole n-best re-scored the same way, and the verified candidates join it with ``acoustic_score``
   = their log-likelihood and ``bias_score`` = the graph's bonus; originals keep their bias. The n-best is
   re-ranked by the sum, so a consumer that takes the bias out compares pure acoustic likelihoods. A name
   the audio does not support has a low likelihood and loses: no unearned credit.
4. **Times.** Token frames (and per-token acoustic scores) of the re-scored n-best come from the best
   alignment on the same grid (a Viterbi back-trace), so word times in the lattice stay sensible.

When nothing is verified the n-best stays exactly as the search left it, beam scores and all: within one
n-best the acoustic scores are always of one kind.

Cost: a search for candidates (about a millisecond with a 1,000-name list), then, when there are any, the
predictor on each candidate's new prefixes and the joiner on frames × prefixes; on the benchmark machine
that is several milliseconds an utterance, a large share of this small model's decode time.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from daemon.hypothesis import Hypothesis
from daemon.tokens import TokenTable
from daemon.weakcache import WeakCache

log = logging.getLogger(__name__)

__all__ = [
    "Alignment",
    "BiasLexicon",
    "JointModel",
    "NameIndex",
    "Substitution",
    "TransducerScorer",
    "bounded_edit_distance",
    "edit_distance",
    "lexicon_of",
    "name_index",
    "no_penalty",
    "phonetic_key",
    "transducer_alignments",
    "verify_names",
]

FloatArray = npt.NDArray[np.float32]
Prediction = tuple[FloatArray, FloatArray, FloatArray]  # predictor output, h, c

MIN_KEY_CHARS = 3  # phrases whose phonetic key is shorter are never substituted ("al", "bo" match too much)
PRESELECT = 32  # (span, phrase) pairs past the letter-pair filter whose exact distance is computed (most shared first)
MAX_GRID_CELLS = 300_000  # frames × labels (over the sequences scored) beyond which verification is skipped

_SPELLINGS = (("ph", "f"), ("ck", "k"), ("sh", "s"), ("ch", "c"), ("th", "t"), ("gh", "g"), ("wh", "w"),
              ("qu", "kw"), ("x", "ks"))
_LETTERS = str.maketrans({"c": "k", "q": "k", "z": "s", "e": "a", "i": "a", "o": "a", "u": "a", "y": "a"})
_REPEATS = re.compile(r"(.)\1+")


# --------------------------------------------------------------------------------------------- candidates


@functools.lru_cache(maxsize=8192)
def phonetic_key(text: str) -> str:
    """A rough key for how ``text`` (normalised) sounds: spaces and apostrophes dropped, "ph" as "f", "sh"
    as "s", "th" as "t" and the like, a silent or breathy "h" dropped, "c"/"q" as "k", "z" as "s", every
    vowel (and "y") as "a", and a run of one letter as one. "Siobhan Okafor" -> "sabanakafar"."""
    key = text.replace(" ", "").replace("'", "")
    for spelling, sound in _SPELLINGS:
        key = key.replace(spelling, sound)
    key = key.replace("h", "").translate(_LETTERS)
    return _REPEATS.sub(r"\1", key)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions and substitutions all cost 1)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def bounded_edit_distance(a: str, b: str, limit: int) -> int:
    """:func:`edit_distance` of ``a`` and ``b`` if it is at most ``limit``, else ``limit + 1``: only cells
    within ``limit`` of the diagonal are filled in, and it stops as soon as a whole row exceeds the limit."""
    over = limit + 1
    if abs(len(a) - len(b)) > limit:
        return over
    previous = [j if j <= limit else over for j in range(len(b) + 1)]
    for i, ca in enumerate(a, 1):
        lo, hi = max(1, i - limit), min(len(b), i + limit)
        current = [over] * (len(b) + 1)
        if i <= limit:
            current[0] = i
        for j in range(lo, hi + 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != b[j - 1]), over)
        if min(current[lo - 1 : hi + 1]) > limit:
            return over
        previous = current
    return previous[-1]


@functools.lru_cache(maxsize=8192)
def _bigrams(key: str) -> Counter[str]:
    padded = f"^{key}$"
    return Counter(padded[i : i + 2] for i in range(len(padded) - 1))


@dataclass(frozen=True)
class Substitution:
    """A bias phrase put in place of some words of an n-best hypothesis."""

    hypothesis: int  # rank of the hypothesis in the n-best it was found in
    start: int  # first word replaced
    end: int  # one past the last word replaced
    phrase: str  # the bias phrase (normalised)
    distance: float  # edit distance of the phonetic keys, per character of the phrase's key
    text: str  # the hypothesis with the words replaced


class NameIndex:
    """The phrases of a bias list, indexed for finding the ones that sound like a span of words.

    Built once per list (:func:`name_index` caches it). The search first counts, for every (span, phrase)
    pair at once, the letter pairs their keys share (an inverted index). One edit changes at most two letter
    pairs of a key padded at both ends, and the lengths of keys within ``k`` edits differ by ``k`` at most,
    so most pairs are ruled out by a table lookup; of the rest, the exact distance is computed for the
    :data:`PRESELECT` pairs that share most letter pairs for their length.
    """

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases = tuple(phrases)
        self.keys = tuple(phonetic_key(p) for p in self.phrases)
        self._index = {p: i for i, p in enumerate(self.phrases)}
        self._key_len = np.array([len(k) for k in self.keys], dtype=np.int32)
        words = np.array([p.count(" ") + 1 for p in self.phrases], dtype=np.int32)
        possessive = np.array([p.endswith("'s") for p in self.phrases], dtype=bool)
        self.max_words = int(words.max()) if self.phrases else 0
        # Which phrases a span may become, by whether it ends in "s" and its words (1, 2, 3 or more): one word
        # more or fewer than the phrase, a key long enough, a possessive only for a span ending in "s".
        self._eligible = np.array([
            (np.abs(np.minimum(words, 3) - n) <= 1) & (self._key_len >= MIN_KEY_CHARS) & (ends_in_s | ~possessive)
            for ends_in_s in (False, True) for n in (1, 2, 3)
        ])
        postings: dict[tuple[str, int], list[int]] = {}
        for i, key in enumerate(self.keys):
            for bigram, count in _bigrams(key).items():
                for occurrence in range(count):
                    postings.setdefault((bigram, occurrence), []).append(i)
        self._postings = {k: np.array(v, dtype=np.int32) for k, v in postings.items()}
        self._max_span_key = int(self._key_len.max()) * 2 + 2 if self.phrases else 0
        self._needed: dict[float, npt.NDArray[np.int16]] = {}
        self._sharing: dict[str, npt.NDArray[np.int32]] = {}  # by span key, bounded

    def __len__(self) -> int:
        return len(self.phrases)

    def _phrases_sharing(self, key: str) -> npt.NDArray[np.int32]:
        """Each phrase once for every letter pair it shares with ``key`` (counted with multiplicity)."""
        ids = self._sharing.get(key)
        if ids is None:
            found = [self._postings.get((bigram, occurrence)) for bigram, count in _bigrams(key).items()
                     for occurrence in range(count)]
            ids = np.concatenate([f for f in found if f is not None] or [np.zeros(0, dtype=np.int32)])
            if len(self._sharing) >= 4096:
                self._sharing.clear()
            self._sharing[key] = ids
        return ids

    def _shared_needed(self, max_distance: float) -> npt.NDArray[np.int16]:
        """``[eligibility row, span key length, phrase]``: letter pairs a span must share with the phrase to be
        within ``max_distance`` (more than a key has where it cannot be)."""
        table = self._needed.get(max_distance)
        if table is None:
            allowed = np.floor(max_distance * self._key_len).astype(np.int32)
            span_len = np.arange(self._max_span_key + 1, dtype=np.int32)[:, None]
            needed = np.maximum(span_len, self._key_len) + 1 - 2 * allowed
            never = self._max_span_key + 2
            needed[np.abs(span_len - self._key_len) > allowed] = never
            table = np.where(self._eligible[:, None, :], needed[None], never).astype(np.int16)
            self._needed[max_distance] = table
        return table

    def find(self, texts: Sequence[str], max_distance: float, limit: int) -> list[Substitution]:
        """Up to ``limit`` substitutions into ``texts`` (an n-best, best first), closest first, at most one per
        phrase (at its closest span; of equally close ones, in the best hypothesis)."""
        if not self.phrases or limit <= 0 or max_distance <= 0.0:
            return []
        spans: dict[str, tuple[int, int, int]] = {}  # span text -> first (hypothesis, start, words)
        for rank, text in enumerate(texts):
            words = text.split()
            for start in range(len(words)):
                for n in range(1, min(self.max_words + 1, len(words) - start) + 1):
                    spans.setdefault(" ".join(words[start : start + n]), (rank, start, n))
        span_texts = [s for s in spans if len(phonetic_key(s)) <= self._max_span_key]
        if not span_texts:
            return []
        span_keys = [phonetic_key(s) for s in span_texts]
        n_spans, n_phrases = len(span_texts), len(self.phrases)
        hits = [self._phrases_sharing(key) for key in span_keys]
        owners = np.repeat(np.arange(n_spans, dtype=np.int64) * n_phrases, [len(h) for h in hits])
        shared = np.bincount(np.concatenate(hits) + owners, minlength=n_spans * n_phrases).reshape(n_spans, -1)
        rows = [3 * text.endswith("s") + min(spans[text][2], 3) - 1 for text in span_texts]
        lengths = [len(k) for k in span_keys]
        ok = shared >= self._shared_needed(max_distance)[rows, lengths]
        for s, text in enumerate(span_texts):  # a span that already is a phrase stays as it is
            same = self._index.get(text)
            if same is not None:
                ok[s, same] = False
        flat = np.flatnonzero(ok)
        if len(flat) > PRESELECT:
            pair_span, pair_phrase = np.divmod(flat, n_phrases)
            similarity = shared.ravel()[flat] / np.maximum(np.array(lengths)[pair_span], self._key_len[pair_phrase])
            flat = flat[np.argpartition(-similarity, PRESELECT - 1)[:PRESELECT]]
        best: dict[int, tuple[float, int, int]] = {}  # phrase -> (distance, hypothesis, span)
        for pair in flat.tolist():
            s, p = divmod(pair, n_phrases)
            key = self.keys[p]
            allowed = int(max_distance * len(key))
            edits = bounded_edit_distance(span_keys[s], key, allowed)
            if edits > allowed:
                continue
            distance = edits / len(key)
            rank = spans[span_texts[s]][0]
            if p not in best or (distance, rank) < best[p][:2]:
                best[p] = (distance, rank, s)
        out: list[Substitution] = []
        for p, (distance, rank, s) in sorted(best.items(), key=lambda item: item[1][:2]):
            phrase = self.phrases[p]
            source = texts[rank]
            if f" {phrase} " in f" {source} ":
                continue  # the hypothesis already has this name
            _, start, n = spans[span_texts[s]]
            words = source.split()
            text = " ".join([*words[:start], phrase, *words[start + n :]])
            out.append(Substitution(rank, start, start + n, phrase, distance, text))
            if len(out) == limit:
                break
        return out


class _Phrase(Protocol):
    @property
    def text(self) -> str: ...


@runtime_checkable
class BiasLexicon(Protocol):
    """What verification needs of a bias list: its phrases and the bonus its graph gives each token
    (:class:`daemon.bias.BiasGraph` is one)."""

    @property
    def phrases(self) -> Sequence[_Phrase]: ...

    def token_bonuses(self, token_ids: Iterable[int]) -> tuple[float, ...]: ...


def lexicon_of(bias_state: object) -> BiasLexicon | None:
    """The whole list behind a recogniser stream's bias state, if the state offers it as ``graph`` (the
    states of :class:`daemon.bias.BiasGraph` do); None otherwise."""
    graph = getattr(bias_state, "graph", None)
    return graph if isinstance(graph, BiasLexicon) else None


_indexes: WeakCache[NameIndex] = WeakCache()


def name_index(lexicon: BiasLexicon) -> NameIndex:
    """The :class:`NameIndex` of ``lexicon``'s phrases, built once per lexicon object."""
    return _indexes.get(lexicon, lambda: NameIndex(p.text for p in lexicon.phrases))


# --------------------------------------------------------------------------------------------- the forward


class JointModel(Protocol):
    """The predictor and joiner of a transducer (:class:`daemon.recognizer.TransducerBackend` is one)."""

    def initial_predictor_state(self) -> tuple[FloatArray, FloatArray]: ...

    def predict(self, token: int, h: FloatArray, c: FloatArray) -> Prediction: ...

    def join(self, enc: FloatArray, preds: FloatArray) -> FloatArray: ...


@dataclass(frozen=True)
class Alignment:
    """A label sequence scored against the encoder frames of an utterance."""

    log_likelihood: float  # log P(labels | frames): summed over every alignment
    frames: tuple[int, ...]  # frame at which each label is emitted on the best alignment
    token_scores: tuple[float, ...]  # log probability of each label where the best alignment emits it


class TransducerScorer:
    """Scores label sequences against the encoder frames ``enc`` (T, joint_dim) of one utterance.

    The transducer lattice: at frame t with u labels emitted, the model emits blank (on to frame t + 1) or
    label u + 1 (staying at t); a sequence ends with a blank from the last frame. ``alpha[t, u]`` sums over
    the ways of reaching (t, u); within a frame it is a first-order recurrence in u, solved at once with a
    running log-sum-exp, so the loop is over frames only. The best alignment uses the same recurrence with
    max and remembers where each frame was entered, for the back-trace.

    The predictor runs once per distinct prefix (``predictions``, the search's cache of them, is used and
    filled in), the joiner once per frame for all new prefixes together; the joiner's log-probabilities are
    kept per prefix, so a later call that shares prefixes with an earlier one pays only for what is new.
    """

    def __init__(self, model: JointModel, enc: FloatArray,
                 predictions: dict[tuple[int, ...], Prediction] | None = None) -> None:
        if len(enc) == 0:
            raise ValueError("no encoder frames to align to")
        self.model = model
        self.enc = enc
        self._predictions = {} if predictions is None else predictions
        if () not in self._predictions:
            h, c = model.initial_predictor_state()
            self._predictions[()] = model.predict(0, h, c)  # the predictor starts from blank, as in the search
        self._logp: dict[tuple[int, ...], FloatArray] = {}  # prefix -> (T, vocab) log-probabilities

    def log_likelihoods(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """log P(labels | frames) of each sequence, summed over every alignment."""
        return self._forward(sequences, best_path=False)[0]

    def alignments(self, sequences: Sequence[Sequence[int]]) -> list[Alignment]:
        """The log-likelihood of each sequence and its best alignment."""
        return self._forward(sequences, best_path=True)[1]

    def _score_prefixes(self, prefixes: list[tuple[int, ...]]) -> None:
        new = [p for p in dict.fromkeys(prefixes) if p not in self._logp]
        if not new:
            return
        outputs = []
        for prefix in new:  # in order of length within a sequence: a parent's prediction is there first
            cached = self._predictions.get(prefix)
            if cached is None:
                _, h, c = self._predictions[prefix[:-1]]
                cached = self._predictions[prefix] = self.model.predict(prefix[-1], h, c)
            outputs.append(cached[0])
        preds = np.stack(outputs)
        logp = np.stack([self.model.join(frame, preds) for frame in self.enc], axis=1)  # (M, T, vocab) logits
        logp -= logp.max(axis=2, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=2, keepdims=True))
        for prefix, rows in zip(new, logp, strict=True):
            self._logp[prefix] = rows

    def _forward(self, sequences: Sequence[Sequence[int]], best_path: bool) -> tuple[list[float], list[Alignment]]:
        if not sequences:
            return [], []
        seqs = [tuple(int(t) for t in seq) for seq in sequences]
        paths = [[seq[:u] for u in range(len(seq) + 1)] for seq in seqs]
        self._score_prefixes([p for path in paths for p in path])
        n_frames = len(self.enc)
        lengths = np.array([len(seq) for seq in seqs], dtype=np.int64)
        width = int(lengths.max()) + 1
        # One row per sequence, padded to the longest; cells past a sequence's end are never read for it.
        blank = np.zeros((n_frames, len(seqs), width), dtype=np.float64)
        emit = np.zeros((n_frames, len(seqs), width - 1), dtype=np.float64)  # label u+1 emitted from u
        for row, (seq, path) in enumerate(zip(seqs, paths, strict=True)):
            logp = np.stack([self._logp[p] for p in path], axis=1)  # (T, U+1, vocab)
            blank[:, row, : len(seq) + 1] = logp[:, :, 0]
            emit[:, row, : len(seq)] = logp[:, np.arange(len(seq)), list(seq)]
        cum = np.zeros_like(blank)
        np.cumsum(emit, axis=2, out=cum[:, :, 1:])  # cum[t, h, u]: labels 1..u all emitted at frame t

        alpha = cum[0].copy()
        best = cum[0].copy()
        entered = np.zeros(blank.shape if best_path else (0,), dtype=np.int64)  # u at which frame t is entered
        positions = np.arange(width, dtype=np.int64)
        for t in range(1, n_frames):
            alpha = cum[t] + np.logaddexp.accumulate(alpha + blank[t - 1] - cum[t], axis=1)
            if best_path:
                came = best + blank[t - 1] - cum[t]
                running = np.maximum.accumulate(came, axis=1)
                entered[t] = np.maximum.accumulate(np.where(came >= running, positions, 0), axis=1)
                best = cum[t] + running
        rows = np.arange(len(seqs))
        totals = (alpha[rows, lengths] + blank[n_frames - 1, rows, lengths]).tolist()
        if not best_path:
            return totals, []

        out = []
        for row, length in enumerate(lengths.tolist()):
            frames = [0] * length
            scores = [0.0] * length
            u = length
            for t in range(n_frames - 1, -1, -1):
                k = int(entered[t, row, u])
                for j in range(k, u):
                    frames[j] = t
                    scores[j] = float(emit[t, row, j])
                u = k
                if u == 0:
                    break
            out.append(Alignment(totals[row], tuple(frames), tuple(scores)))
        return totals, out


def transducer_alignments(model: JointModel, enc: FloatArray, sequences: Sequence[Sequence[int]],
                          predictions: dict[tuple[int, ...], Prediction] | None = None) -> list[Alignment]:
    """The forward log-likelihood and best alignment of each label sequence given ``enc`` (T, joint_dim):
    :meth:`TransducerScorer.alignments`."""
    return TransducerScorer(model, enc, predictions).alignments(sequences)


# --------------------------------------------------------------------------------------------- together


def no_penalty(labels: Sequence[int]) -> float:
    """The search's penalty for a label sequence when it has none (no vocabulary)."""
    return 0.0


def verify_names(nbest: Sequence[Hypothesis], enc: FloatArray, model: JointModel, tokens: TokenTable,
                 lexicon: BiasLexicon, predictions: dict[tuple[int, ...], Prediction] | None = None, *,
                 max_distance: float, candidates: int,
                 penalty: Callable[[Sequence[int]], float] = no_penalty) -> list[Hypothesis] | None:
    """The n-best with verified substitutions added and every entry re-scored, best first; None when no
    substitution is verified (the n-best then stands as the search left it).

    Substitutions are made in the best hypothesis only (``nbest[0]``). ``enc`` is the utterance's encoder
    output (T, joint_dim); ``predictions`` the search's predictor cache. A substitution is verified when its
    forward log-likelihood plus the bias graph's bonus for its tokens beats the same sum for the hypothesis
    it was made from (with that hypothesis' own bias). Only then is the rest of the n-best re-scored the same
    way: every entry's acoustic score becomes its forward log-likelihood, its token frames and per-token
    acoustic scores those of its best alignment; originals keep their bias scores. ``penalty`` (the search's
    vocabulary penalty for a label sequence, :mod:`daemon.vocabulary`) is taken off every log-likelihood, so
    the re-scored entries keep the search's preference for known words.
    """
    if not nbest or len(enc) == 0:
        return None
    best = nbest[0]
    texts = {h.text for h in nbest}
    found = [s for s in name_index(lexicon).find([best.text], max_distance, candidates) if s.text not in texts]
    if not found:
        return None
    ids = [tuple(tokens.encode(s.text)) for s in found]
    labels = sum(len(h.tokens) + 1 for h in nbest) + sum(len(i) + 1 for i in ids)
    if len(enc) * labels > MAX_GRID_CELLS:
        log.debug("bias verification skipped: %d frames × %d labels is too large", len(enc), labels)
        return None
    bonuses = [lexicon.token_bonuses(i) for i in ids]
    scorer = TransducerScorer(model, enc, predictions)
    sequences = [best.tokens, *ids]
    source, *totals = (ll - penalty(s) for ll, s in zip(scorer.log_likelihoods(sequences), sequences, strict=True))
    winners = [k for k, total in enumerate(totals) if total + sum(bonuses[k]) > source + best.bias_score]
    if not winners:
        return None

    alignments = scorer.alignments([h.tokens for h in nbest] + [ids[k] for k in winners])
    scored: list[Hypothesis] = []
    for hyp, alignment in zip(nbest, alignments, strict=False):
        scored.append(Hypothesis(hyp.text, hyp.tokens, alignment.frames,
                                 alignment.log_likelihood - penalty(hyp.tokens), hyp.bias_score,
                                 alignment.token_scores, hyp.token_bias_scores))
    for k, alignment in zip(winners, alignments[len(nbest) :], strict=True):
        scored.append(Hypothesis(found[k].text, ids[k], alignment.frames,
                                 alignment.log_likelihood - penalty(ids[k]), sum(bonuses[k]),
                                 alignment.token_scores, bonuses[k]))
    scored.sort(key=lambda h: h.score, reverse=True)
    out: list[Hypothesis] = []
    seen: set[str] = set()
    for hyp in scored:
        if hyp.text not in seen:
            seen.add(hyp.text)
            out.append(hyp)
    return out

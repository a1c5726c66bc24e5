"""Recognition lattices: the word graph and n-best list that leave the device instead of audio.

A :class:`Lattice` is what the daemon publishes on ``harkd/<device_id>/lattice`` (schema
``daemon/schemas/lattice.schema.json``, ``"schema": "harkd.lattice/1"``). It holds

* who and when: utterance id (a UUID shared with the wake event), device id, ``kind`` (``speculative`` or
  ``final``), ``seq`` (0-based count of lattices published for the utterance; ``(utterance_id, seq)`` is
  unique, so subscribers can drop duplicates), the utterance's start and end on the audio clock (seconds,
  from sample counts) and the versions of the models that made it;
* a word graph: nodes with times and arcs carrying one word each with its start and end and a score split
  into an acoustic part and a context-bias part (natural-log probabilities, higher is better);
* the n-best list it was built from, best first: text, acoustic, bias and total score.

Node and word times are seconds from the utterance start (the first sample of the recogniser stream).
Node ids are in topological order: node 0 is the start, the last node the end, and every arc goes from a
lower id to a higher one.

How :meth:`Lattice.from_nbest` builds the graph
------------------------------------------------
Each hypothesis is a word sequence (its ``text`` split on spaces) with word times from its tokens: a word
starts at ``frame(first character) * frame_shift`` and ends at ``(frame(last character) + 1) *
frame_shift``. The sequences are merged into a prefix tree, best hypothesis first: two hypotheses share arcs
for as long as their words agree, and an arc is keyed by (source node, word, whether it is the
hypothesis' last word), so the last word of every hypothesis is its own arc into the single end node. A
shared arc keeps the times of the best hypothesis through it; a node's time is the end of the word that
enters it, and times are clamped so they never go backwards along a path. A hypothesis without words is
an arc with the empty word from start to end (``!NULL`` in SLF, ``<eps>`` in OpenFst).

Scores: each hypothesis' acoustic and bias totals are split over its words, separately. If the hypothesis
carries per-token scores (optional attributes ``token_acoustic_scores`` and ``token_bias_scores``, one
float per token), a word gets the sum over its characters plus the space after it; otherwise the split is
proportional to the number of characters in each word. A shared arc keeps the share of the best
hypothesis through it, and the last arc of every hypothesis takes the remainder, so that for every n-best
entry the arcs of its path sum exactly (up to float rounding) to its ``acoustic_score`` and to its
``bias_score``. Hypotheses with the same words as a better one share its path (and its scores); they stay
in the n-best list.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from daemon.messages import PayloadError, decode_json, encode_json, validate_payload

__all__ = [
    "EPSILON",
    "KINDS",
    "LATTICE_SCHEMA",
    "Arc",
    "HypothesisLike",
    "Lattice",
    "LatticeError",
    "NBestEntry",
    "Node",
    "new_utterance_id",
]

logger = logging.getLogger(__name__)

LATTICE_SCHEMA = "harkd.lattice/1"
KINDS = ("speculative", "final")
#: The word on the arc that stands for a hypothesis with no words.
EPSILON = ""

LatticeKind = Literal["speculative", "final"]

_SPACE_TOKENS = frozenset({" ", "▁", "<space>", "|"})


class LatticeError(ValueError):
    """A lattice that is not well formed, or hypotheses that cannot make one."""


class HypothesisLike(Protocol):
    """What :meth:`Lattice.from_nbest` needs from a hypothesis (``daemon.recognizer.Hypothesis``)."""

    @property
    def text(self) -> str: ...

    @property
    def tokens(self) -> Sequence[int]: ...

    @property
    def token_frames(self) -> Sequence[int]: ...

    @property
    def acoustic_score(self) -> float: ...

    @property
    def bias_score(self) -> float: ...


def new_utterance_id() -> str:
    """A fresh utterance id (random UUID, lowercase hex with dashes)."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Node:
    id: int
    time: float  # seconds from the utterance start


@dataclass(frozen=True)
class Arc:
    source: int  # node id
    target: int  # node id, > source
    word: str  # one word; EPSILON for an empty hypothesis
    start: float  # seconds from the utterance start
    end: float
    acoustic_score: float  # natural-log probability, this arc's share
    bias_score: float  # context-bias bonus, this arc's share

    @property
    def score(self) -> float:
        return self.acoustic_score + self.bias_score


@dataclass(frozen=True)
class NBestEntry:
    text: str
    acoustic_score: float
    bias_score: float

    @property
    def score(self) -> float:
        return self.acoustic_score + self.bias_score


@dataclass(frozen=True)
class _Word:
    text: str
    start: float
    end: float
    acoustic_score: float
    bias_score: float


def _round_time(t: float) -> float:
    return round(t, 6)


def _is_space(symbol: str) -> bool:
    return symbol in _SPACE_TOKENS


def _is_special(symbol: str) -> bool:
    return len(symbol) > 1 and symbol.startswith("<") and symbol.endswith(">")


def _optional_token_scores(hyp: HypothesisLike, name: str) -> Sequence[float] | None:
    # Optional per-token scores: a recogniser that tracks them gives better per-word splits.
    scores = getattr(hyp, name, None)
    if scores is None or len(scores) != len(hyp.tokens):
        return None
    return [float(s) for s in scores]


def _split_words(hyp: HypothesisLike, token_list: Sequence[str], frame_shift_s: float) -> list[_Word]:
    """The hypothesis' words with times and per-word score shares (see the module docstring)."""
    words = hyp.text.split()
    if not words:
        return []
    if len(hyp.token_frames) != len(hyp.tokens):
        raise LatticeError(
            f"hypothesis {hyp.text!r}: {len(hyp.tokens)} tokens but {len(hyp.token_frames)} token frames"
        )
    # Group token positions into words; spaces and special tokens belong to the word before them.
    groups: list[list[int]] = []
    owned: list[list[int]] = []  # token positions whose scores count toward each word
    current: list[int] = []
    loose: list[int] = []  # spaces/specials seen since the last character
    for pos, token_id in enumerate(hyp.tokens):
        if not 0 <= token_id < len(token_list):
            raise LatticeError(f"hypothesis {hyp.text!r}: token id {token_id} is not in the token list")
        symbol = token_list[token_id]
        if _is_space(symbol) or _is_special(symbol):
            if current:
                groups.append(current)
                owned.append(list(current))
                current = []
            if owned:
                owned[-1].append(pos)
            else:
                loose.append(pos)
        else:
            current.append(pos)
    if current:
        groups.append(current)
        owned.append(list(current))
    if owned and loose:
        owned[0].extend(loose)

    frames = hyp.token_frames
    spans: list[tuple[float, float]]
    if len(groups) == len(words):
        spans = [(frames[g[0]], frames[g[-1]] + 1) for g in groups]
        weights = [float(len(g)) for g in groups]
    else:
        # The text does not split like the tokens (it should: both are the same normalised characters).
        # Keep the text's words and spread them over the tokens' time span by length.
        logger.warning(
            "hypothesis %r: %d words in the text but %d in the tokens; word times are approximate",
            hyp.text,
            len(words),
            len(groups),
        )
        first = frames[0] if len(frames) else 0
        last = frames[-1] + 1 if len(frames) else 0
        total_chars = sum(len(w) for w in words)
        spans, acc = [], 0
        for w in words:
            lo = first + (last - first) * acc / total_chars
            acc += len(w)
            spans.append((lo, first + (last - first) * acc / total_chars))
        weights = [float(len(w)) for w in words]
        owned = []

    ac_tokens = _optional_token_scores(hyp, "token_acoustic_scores") if owned else None
    bias_tokens = _optional_token_scores(hyp, "token_bias_scores") if owned else None
    total_weight = sum(weights)
    out = []
    for i, word in enumerate(words):
        share = weights[i] / total_weight
        ac = sum(ac_tokens[p] for p in owned[i]) if ac_tokens is not None else hyp.acoustic_score * share
        bias = sum(bias_tokens[p] for p in owned[i]) if bias_tokens is not None else hyp.bias_score * share
        start, end = spans[i]
        out.append(_Word(word, start * frame_shift_s, end * frame_shift_s, ac, bias))
    return out


def _check_finite(what: str, *values: float) -> None:
    for v in values:
        if not isinstance(v, int | float) or not math.isfinite(v):
            raise LatticeError(f"{what}: {v!r} is not a finite number")


@dataclass(frozen=True)
class Lattice:
    """A word graph plus n-best list for one utterance (see the module docstring for the conventions)."""

    utterance_id: str
    device_id: str
    kind: LatticeKind
    seq: int  # 0-based count of lattices published for this utterance
    start_time: float  # seconds on the audio clock (sample count / sample rate)
    end_time: float  # seconds on the audio clock
    nodes: tuple[Node, ...]
    arcs: tuple[Arc, ...]
    nbest: tuple[NBestEntry, ...]
    models: Mapping[str, str] = field(default_factory=dict)  # model name -> version
    schema: str = LATTICE_SCHEMA

    def __post_init__(self) -> None:
        if self.schema != LATTICE_SCHEMA:
            raise LatticeError(f"unsupported lattice schema {self.schema!r} (this is {LATTICE_SCHEMA})")
        if self.kind not in KINDS:
            raise LatticeError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not isinstance(self.seq, int) or self.seq < 0:
            raise LatticeError(f"seq must be a non-negative integer, not {self.seq!r}")
        _check_finite("start_time/end_time", self.start_time, self.end_time)
        if not 0 <= self.start_time <= self.end_time:
            raise LatticeError(f"need 0 <= start_time <= end_time, got {self.start_time} and {self.end_time}")
        if not self.nodes:
            raise LatticeError("a lattice has at least one node")
        for i, node in enumerate(self.nodes):
            if node.id != i:
                raise LatticeError(f"node {i} has id {node.id}: node ids must be 0, 1, 2, ... in order")
            _check_finite(f"node {i} time", node.time)
        n = len(self.nodes)
        for j, arc in enumerate(self.arcs):
            if not 0 <= arc.source < arc.target < n:
                raise LatticeError(
                    f"arc {j} goes from node {arc.source} to {arc.target}: arcs must go forward "
                    f"(source < target) between nodes 0..{n - 1}"
                )
            if arc.word != arc.word.strip() or len(arc.word.split()) > 1:
                raise LatticeError(f"arc {j}: word {arc.word!r} must be one word without spaces")
            _check_finite(f"arc {j}", arc.start, arc.end, arc.acoustic_score, arc.bias_score)
        for k, entry in enumerate(self.nbest):
            _check_finite(f"n-best entry {k}", entry.acoustic_score, entry.bias_score)

    # -- structure -------------------------------------------------------------------------------------

    @property
    def start_node(self) -> int:
        return 0

    @property
    def end_node(self) -> int:
        return len(self.nodes) - 1

    @property
    def best(self) -> NBestEntry | None:
        return self.nbest[0] if self.nbest else None

    @property
    def duration(self) -> float:
        return self.end_time - self.start_time

    def paths(self) -> Iterator[tuple[Arc, ...]]:
        """Every path from the start node to the end node (as many as distinct n-best word sequences)."""
        outgoing: dict[int, list[Arc]] = {}
        for arc in self.arcs:
            outgoing.setdefault(arc.source, []).append(arc)
        stack: list[tuple[int, tuple[Arc, ...]]] = [(self.start_node, ())]
        while stack:
            node, path = stack.pop()
            if node == self.end_node and path:
                yield path
                continue
            for arc in reversed(outgoing.get(node, [])):
                stack.append((arc.target, (*path, arc)))

    # -- building ----------------------------------------------------------------------------------------

    @classmethod
    def from_nbest(
        cls,
        hypotheses: Sequence[HypothesisLike],
        *,
        token_list: Sequence[str],
        frame_shift_s: float,
        utterance_id: str,
        device_id: str,
        kind: LatticeKind,
        seq: int,
        start_time: float,
        end_time: float,
        models: Mapping[str, str] | None = None,
    ) -> Lattice:
        """Merge an n-best list (best first) into a word graph; see the module docstring for how.

        ``token_list`` maps token ids to characters (``TokenTable.tokens``: ``" "`` separates words, tokens
        like ``<blank>`` are ignored); ``frame_shift_s`` is the encoder frame shift in seconds;
        ``start_time``/``end_time`` are the utterance's bounds on the audio clock in seconds.
        """
        if not frame_shift_s > 0:
            raise LatticeError(f"frame_shift_s must be positive, not {frame_shift_s!r}")
        duration = max(0.0, end_time - start_time)
        node_times: list[float] = [0.0]
        final = -1  # placeholder id of the end node until all nodes are known
        drafts: list[Arc] = []
        by_key: dict[tuple[int, str, bool], int] = {}
        nbest: list[NBestEntry] = []
        for hyp in hypotheses:
            _check_finite(f"hypothesis {hyp.text!r} scores", hyp.acoustic_score, hyp.bias_score)
            words = _split_words(hyp, token_list, frame_shift_s)
            nbest.append(NBestEntry(" ".join(w.text for w in words), hyp.acoustic_score, hyp.bias_score))
            if not words:
                words = [_Word(EPSILON, 0.0, 0.0, hyp.acoustic_score, hyp.bias_score)]
            node, path_ac, path_bias = 0, 0.0, 0.0
            for i, word in enumerate(words):
                last = i == len(words) - 1
                key = (node, word.text, last)
                index = by_key.get(key)
                if index is None:
                    start = max(_round_time(word.start), node_times[node])
                    end = max(_round_time(word.end), start)
                    if last:  # the last arc takes the remainder: the path sums to the hypothesis' scores
                        ac, bias, target = hyp.acoustic_score - path_ac, hyp.bias_score - path_bias, final
                    else:
                        ac, bias, target = word.acoustic_score, word.bias_score, len(node_times)
                        node_times.append(end)
                    index = len(drafts)
                    by_key[key] = index
                    drafts.append(Arc(node, target, word.text, start, end, ac, bias))
                arc = drafts[index]
                path_ac += arc.acoustic_score
                path_bias += arc.bias_score
                node = arc.target

        if drafts:
            end_id = len(node_times)
            final_time = max([_round_time(duration)] + [a.end for a in drafts if a.target == final])
            node_times.append(final_time)
        else:
            node_times[0] = _round_time(duration)
            end_id = 0
        arcs = tuple(replace(a, target=end_id) if a.target == final else a for a in drafts)
        return cls(
            utterance_id=utterance_id,
            device_id=device_id,
            kind=kind,
            seq=seq,
            start_time=start_time,
            end_time=end_time,
            nodes=tuple(Node(i, t) for i, t in enumerate(node_times)),
            arcs=arcs,
            nbest=tuple(nbest),
            models=dict(models or {}),
        )

    # -- JSON ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "utterance_id": self.utterance_id,
            "device_id": self.device_id,
            "kind": self.kind,
            "seq": self.seq,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "models": dict(self.models),
            "start_node": self.start_node,
            "end_node": self.end_node,
            "nodes": [{"id": n.id, "time": n.time} for n in self.nodes],
            "arcs": [
                {
                    "from": a.source,
                    "to": a.target,
                    "word": a.word,
                    "start": a.start,
                    "end": a.end,
                    "acoustic_score": a.acoustic_score,
                    "bias_score": a.bias_score,
                }
                for a in self.arcs
            ],
            "nbest": [
                {
                    "text": e.text,
                    "acoustic_score": e.acoustic_score,
                    "bias_score": e.bias_score,
                    "score": e.score,
                }
                for e in self.nbest
            ],
        }

    @classmethod
    def from_dict(cls, document: object) -> Lattice:
        """Validate against the schema, then build; :class:`LatticeError` says what is wrong."""
        try:
            validate_payload("lattice", document)
        except PayloadError as exc:
            raise LatticeError(str(exc)) from exc
        if not isinstance(document, Mapping):  # guaranteed by the schema; keeps the type checker informed
            raise LatticeError("a lattice is a JSON object")
        d = document
        if d["start_node"] != 0 or d["end_node"] != len(d["nodes"]) - 1:
            raise LatticeError(
                f"{LATTICE_SCHEMA} has start_node 0 and end_node {len(d['nodes']) - 1} (the last node), "
                f"not {d['start_node']} and {d['end_node']}"
            )
        return cls(
            utterance_id=d["utterance_id"],
            device_id=d["device_id"],
            kind=d["kind"],
            seq=d["seq"],
            start_time=float(d["start_time"]),
            end_time=float(d["end_time"]),
            nodes=tuple(Node(n["id"], float(n["time"])) for n in d["nodes"]),
            arcs=tuple(
                Arc(
                    a["from"],
                    a["to"],
                    a["word"],
                    float(a["start"]),
                    float(a["end"]),
                    float(a["acoustic_score"]),
                    float(a["bias_score"]),
                )
                for a in d["arcs"]
            ),
            nbest=tuple(NBestEntry(e["text"], float(e["acoustic_score"]), float(e["bias_score"])) for e in d["nbest"]),
            models=dict(d["models"]),
            schema=d["schema"],
        )

    def to_json(self) -> bytes:
        """The payload published on MQTT (compact UTF-8 JSON)."""
        return encode_json(self.to_dict())

    @classmethod
    def from_json(cls, payload: bytes | str) -> Lattice:
        try:
            document = decode_json(payload)
        except PayloadError as exc:
            raise LatticeError(str(exc)) from exc
        return cls.from_dict(document)

    # -- text formats ---------------------------------------------------------------------------------

    def to_htk_slf(self) -> str:
        """HTK Standard Lattice Format: ``a=`` holds the acoustic score, ``l=`` the bias score (natural log).

        Node times ``t=`` are seconds from the utterance start; the empty word is written ``!NULL``.
        """
        lines = [
            f"# harkd lattice: utterance {self.utterance_id}, device {self.device_id}, "
            f"{self.kind} #{self.seq}, audio {self.start_time:.3f}-{self.end_time:.3f} s",
            "# a= acoustic log probability, l= context-bias bonus (natural log)",
            "VERSION=1.0",
            f"UTTERANCE={self.utterance_id}",
            f"start={self.start_node}",
            f"end={self.end_node}",
            f"N={len(self.nodes)} L={len(self.arcs)}",
        ]
        lines += [f"I={n.id} t={n.time:.3f}" for n in self.nodes]
        lines += [
            f"J={j} S={a.source} E={a.target} W={_slf_word(a.word)} a={a.acoustic_score:.6f} l={a.bias_score:.6f}"
            for j, a in enumerate(self.arcs)
        ]
        return "\n".join(lines) + "\n"

    def openfst_symbols(self) -> dict[str, int]:
        """Word -> label for :meth:`to_openfst_text`: ``<eps>`` is 0, then words in order of appearance."""
        table = {"<eps>": 0}
        for arc in self.arcs:
            label = arc.word or "<eps>"
            if label not in table:
                table[label] = len(table)
        return table

    def to_openfst_text(self, *, include_bias: bool = True) -> str:
        """OpenFst text format (an acceptor written as a transducer, word labels, tropical weights).

        Each line is ``source target word word cost`` with cost ``-(acoustic + bias)`` (or ``-acoustic``
        when ``include_bias`` is false); the last line is the end state. Compile with ``fstcompile
        --isymbols=words.txt --osymbols=words.txt``, the symbol table from :meth:`openfst_symbols_text`.
        """
        lines = []
        for a in self.arcs:
            label = a.word or "<eps>"
            cost = -(a.acoustic_score + a.bias_score) if include_bias else -a.acoustic_score
            lines.append(f"{a.source}\t{a.target}\t{label}\t{label}\t{cost + 0.0:.6f}")
        lines.append(f"{self.end_node}")
        return "\n".join(lines) + "\n"

    def openfst_symbols_text(self) -> str:
        """The symbol table of :meth:`openfst_symbols` as an OpenFst symbols file."""
        return "".join(f"{word}\t{label}\n" for word, label in self.openfst_symbols().items())


def _slf_word(word: str) -> str:
    if not word:
        return "!NULL"
    # HTK strings: a leading quote would start a quoted string, and backslash escapes; quote what is needed.
    if word[0] in "'\"" or any(c in word for c in "\\= \t"):
        return "".join("\\" + c if c in "\\'\"= \t" else c for c in word)
    return word

"""Context biasing: the owner's names, as a graph the beam search walks while it builds the lattice.

A small on-device model cannot know "Siobhan Okafor", and once the beam has pruned a name no rescorer can
bring it back. So each recogniser stream carries a :class:`BiasGraph` state (the ``BiasState`` hook of
:mod:`daemon.recognizer`) and every label the search emits moves it one step and adds a bonus to the
hypothesis' ``bias_score`` (kept apart from its acoustic score, so the cloud can take it out again).

How the graph scores (natural-log units, "nats"):

* Each name of the bias list is normalised exactly as training text is (:func:`daemon.textnorm.normalize`:
  titles, digits, diacritics ...), turned into tokens and followed by a word boundary (the space token).
  Contacts also get their possessive form ("siobhan's"); appliances lose a leading "the", "my" or "our".
  Names that normalise to nothing, or to characters the model has no token for, are skipped and reported
  in :attr:`BiasGraph.skipped`.
* The graph is an Aho-Corasick automaton over those token sequences (a trie with failure links), but a match
  may only begin at a word start: at the start of the hypothesis or after a space. "ana" does not match
  inside "banana".
* A completed name earns its boost (per-entry ``boost``, else the configured score) for each of its tokens
  and the boundary. A name is complete when followed by a space or by the end of the hypothesis.
* While a name is being matched, each token earns only the share ``hold`` of that (default
  :data:`DEFAULT_HOLD`; a token shared by several names earns the largest of their boosts): enough to keep
  the name in the beam; the rest comes when the name completes. A name's first :data:`UNHELD_TOKENS`
  tokens earn nothing while matching (their completion still pays them). That provisional credit is
  withdrawn (a negative bonus) as soon as the hypothesis leaves the partial match, and by
  :meth:`final_bonus` when the hypothesis ends inside one: no unearned credit. (With a 300-name list,
  giving the whole credit while matching raised the WER of utterances that name nobody by 4 to 6 points
  on the benchmark; a quarter of it, 0 to 1 point; a quarter from the third token on, at most 0.4 on five
  sets of held-out voices, for most of the gain in names: ``bench/bias.py``, figures in the README.)
* A name that is the start of a longer one ("ana", "ana lucia") keeps its credit when it completes, and the
  longer one then earns only its remaining tokens: nothing is counted twice.

So a finished hypothesis gets, for each word start, the credit of the longest listed phrase that occurs
there and ends at a word boundary, and nothing else.

Cost: the graph is built once per list (:class:`BiasGraphCache` keeps the last one) and shared by every
stream; every transition and bonus is precomputed, so :meth:`advance` is one dict lookup and a subtraction.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon.messages import BiasSet, PayloadError, decode_json
from daemon.recognizer import BiasState
from daemon.textnorm import normalize
from daemon.tokens import TokenTable

log = logging.getLogger(__name__)

__all__ = [
    "BIAS_STATE_FILE",
    "DEFAULT_BOOST",
    "MAX_BIAS_FILE_BYTES",
    "UNHELD_TOKENS",
    "BiasFileError",
    "BiasGraph",
    "BiasGraphCache",
    "BiasPhrase",
    "load_bias_file",
    "parse_bias_document",
    "save_bias_file",
]

#: The default log-score bonus per matched token (config ``bias.boost``).
DEFAULT_BOOST = 1.0
#: Share of each matched token's credit given while the match is in progress; the rest comes on completion.
DEFAULT_HOLD = 0.25
#: A name's first tokens earn no provisional credit: two letters begin too many ordinary words (credit
#: from the first letter let a 300-name list change 1% of the words of utterances that name nobody).
UNHELD_TOKENS = 2
#: The last good bias list, in the daemon's state directory.
BIAS_STATE_FILE = "bias.json"
#: Bias list files larger than this are refused (a 5,000-name list is well under 1 MiB).
MAX_BIAS_FILE_BYTES = 8 * 1024 * 1024

_ARTICLES = ("the ", "my ", "our ")  # dropped from the start of appliance names
_ROOT_START = 0  # at a word start, no match in progress
_ROOT_MID = 1  # inside a word that no listed phrase starts at


class BiasFileError(ValueError):
    """A bias list file that cannot be read or is not a valid document; the message says why."""


# --------------------------------------------------------------------------------------------- documents


def parse_bias_document(data: bytes | str, source: str = "bias list", *, fmt: str | None = None) -> BiasSet:
    """Parse and validate a bias list document given as JSON or YAML text.

    ``fmt`` is ``"json"`` or ``"yaml"``; None guesses (JSON when the text starts with ``{``). Raises
    :class:`BiasFileError` naming ``source`` and every problem found.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise BiasFileError(f"{source}: not UTF-8 text: {exc}") from None
    if fmt is None:
        fmt = "json" if text.lstrip().startswith("{") else "yaml"
    document: object
    if fmt == "json":
        try:
            document = decode_json(text)
        except PayloadError as exc:
            raise BiasFileError(f"{source}: {exc}") from None
    elif fmt == "yaml":
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise BiasFileError(f"{source}: not valid YAML{where}: {problem}") from None
    else:
        raise ValueError(f"fmt must be 'json', 'yaml' or None, not {fmt!r}")
    if document is None:
        raise BiasFileError(f"{source}: the document is empty")
    try:
        return BiasSet.from_dict(document)
    except PayloadError as exc:
        raise BiasFileError(f"{source}: {exc}") from None


def load_bias_file(path: Path) -> BiasSet:
    """Read a bias list document (JSON, or YAML for ``.yaml``/``.yml``); :class:`BiasFileError` says why not."""
    try:
        size = path.stat().st_size
        if size > MAX_BIAS_FILE_BYTES:
            raise BiasFileError(f"{path}: {size} bytes is more than a bias list may hold ({MAX_BIAS_FILE_BYTES})")
        data = path.read_bytes()
    except OSError as exc:
        raise BiasFileError(f"{path}: cannot read the bias list: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    fmt = "yaml" if suffix in (".yaml", ".yml") else "json" if suffix == ".json" else None
    return parse_bias_document(data, str(path), fmt=fmt)


def save_bias_file(path: Path, document: BiasSet) -> None:
    """Write ``document`` as JSON atomically: readers see the old file or the new one, never a torn one."""
    payload = json.dumps(document.to_dict(), ensure_ascii=False, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class BiasPhrase:
    """One normalised phrase in the graph."""

    text: str  # normalised (daemon.textnorm)
    kind: str  # "contact" or "appliance"
    boost: float  # nats per matched token
    source: str  # the entry it came from, as written


class _Node:
    """A state of the graph; one object per trie node, shared by every hypothesis that reaches it."""

    __slots__ = ("_graph", "_node")

    def __init__(self, graph: BiasGraph, node: int) -> None:
        self._graph = graph
        self._node = node

    def advance(self, token: int) -> tuple[BiasState, float]:
        g = self._graph
        node = self._node
        nxt = g._trans[node].get(token)
        if nxt is None:
            nxt = _ROOT_START if token == g._space else _ROOT_MID
        return g._states[nxt], g._enter[nxt] - g._held[node]

    def final_bonus(self) -> float:
        return self._graph._final[self._node]

    @property
    def continuations(self) -> tuple[int, ...]:
        """Tokens that extend the partial match in progress (none at a word start): a search may try these
        even when the acoustics do not rank them among their best."""
        return self._graph._continuations[self._node]

    @property
    def graph(self) -> BiasGraph:
        """The whole graph this state belongs to (name verification at the end of an utterance needs the list:
        :mod:`daemon.bias_verify`)."""
        return self._graph

    @property
    def held(self) -> float:
        """Credit held provisionally by the partial match in progress (withdrawn if it fails)."""
        return self._graph._held[self._node]

    def __repr__(self) -> str:
        return f"<bias state {self._node} held={self.held:g}>"


class BiasGraph:
    """An immutable bias graph; :meth:`initial_state` is what a recogniser stream starts from."""

    def __init__(self, phrases: Sequence[BiasPhrase], tokens: TokenTable,
                 skipped: Sequence[tuple[str, str]] = (), *, hold: float = DEFAULT_HOLD) -> None:
        if not 0.0 <= hold <= 1.0:
            raise ValueError(f"hold must be between 0 and 1, not {hold!r}")
        self.phrases = tuple(phrases)
        self.tokens = tokens
        self.hold = hold
        self.skipped = tuple(skipped)  # (entry as written, why it was left out)
        self._space = tokens.space_id
        self._build()

    # -- construction -----------------------------------------------------------------------------------

    @classmethod
    def from_document(cls, document: BiasSet | Mapping[str, Any], tokens: TokenTable,
                      score: float = DEFAULT_BOOST, *, possessives: bool = True,
                      hold: float = DEFAULT_HOLD) -> BiasGraph:
        """The graph of a bias list document (a :class:`BiasSet`, or a dict that validates as one).

        ``score`` is the boost of entries without their own. With ``possessives``, each contact also
        matches in its possessive form. ``hold`` is the share of each token's credit given while the name
        is still being matched (the rest comes when it completes). Raises
        :class:`~daemon.messages.PayloadError` for an invalid dict.
        """
        doc = document if isinstance(document, BiasSet) else BiasSet.from_dict(document)
        entries: list[tuple[str, str, float]] = []
        for kind, items in (("contact", doc.contacts), ("appliance", doc.appliances)):
            entries += [(e.name, kind, score if e.boost is None else e.boost) for e in items]
        return cls.from_entries(entries, tokens, possessives=possessives, hold=hold)

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, str, float]], tokens: TokenTable, *,
                     possessives: bool = True, hold: float = DEFAULT_HOLD) -> BiasGraph:
        """The graph of ``(name, kind, boost)`` entries; names are normalised here."""
        index = {t: i for i, t in enumerate(tokens.tokens)}
        by_text: dict[str, BiasPhrase] = {}
        skipped: list[tuple[str, str]] = []
        for name, kind, boost in entries:
            if not boost >= 0.0 or boost == float("inf"):
                skipped.append((name, f"boost {boost!r} is not a finite number >= 0"))
                continue
            text = normalize(name)
            if not text:
                skipped.append((name, "nothing is left after normalisation"))
                continue
            missing = sorted({c for c in text if c not in index})
            if missing:
                skipped.append((name, f"the model has no token for {''.join(missing)!r}"))
                continue
            if kind == "appliance" and text.startswith(_ARTICLES):
                text = text.split(" ", 1)[1]  # "the aquarium pump" is also said without "the"
            forms = [text]
            if possessives and kind == "contact" and not text.endswith("'s"):
                forms.append(text + "'s")
            for form in forms:
                known = by_text.get(form)
                if known is None or boost > known.boost:
                    by_text[form] = BiasPhrase(form, kind, boost, name)
        if skipped:
            log.warning("bias list: %d entr%s left out, e.g. %r: %s", len(skipped),
                        "y" if len(skipped) == 1 else "ies", skipped[0][0], skipped[0][1])
        phrases = sorted(by_text.values(), key=lambda p: p.text)
        return cls(phrases, tokens, skipped, hold=hold)

    @classmethod
    def empty(cls, tokens: TokenTable) -> BiasGraph:
        return cls((), tokens)

    def _build(self) -> None:
        space = self._space
        index = {t: i for i, t in enumerate(self.tokens.tokens)}
        children: list[dict[int, int]] = [{}, {}]
        parent = [_ROOT_START, _ROOT_START]
        credit_in = [0.0, 0.0]  # provisional credit of the token that leads into the node
        is_end = [False, False]  # the node completes a phrase (its last token is the boundary space)
        total = [0.0, 0.0]  # for an end node: what its completed phrase earns in all
        for phrase in self.phrases:
            node = _ROOT_START
            for depth, token in enumerate([*(index[c] for c in phrase.text), space]):
                credit = self.hold * phrase.boost if depth >= UNHELD_TOKENS else 0.0
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(children)
                    children.append({})
                    parent.append(node)
                    credit_in.append(credit)
                    is_end.append(False)
                    total.append(0.0)
                    children[node][token] = nxt
                else:
                    credit_in[nxt] = max(credit_in[nxt], credit)
                node = nxt
            is_end[node] = True
            total[node] = phrase.boost * (len(phrase.text) + 1)

        n = len(children)
        fail = [_ROOT_MID] * n
        value = [0.0] * n  # credit of the whole path from the root
        base = [0.0] * n  # credit already committed along the path (by a shorter phrase it starts with)
        held = [0.0] * n  # provisional credit while in the node: value - base
        gain = [0.0] * n  # credit committed on entering the node (phrases completed there)
        # Non-default transitions per node (a letter otherwise goes to _ROOT_MID, a space to _ROOT_START).
        # A node without children shares its failure node's dict.
        unset: dict[int, int] = {}  # every node below the roots gets its own table in the loop
        trans: list[dict[int, int]] = [children[_ROOT_START], {}] + [unset] * (n - 2)
        queue: deque[int] = deque()
        for token, child in children[_ROOT_START].items():
            fail[child] = _ROOT_START if token == space else _ROOT_MID
            queue.append(child)
        while queue:
            node = queue.popleft()
            up = parent[node]
            # An end node's path is worth exactly its phrase's credit: the boundary token brings what the
            # provisional credit along the way fell short of (all of it when hold is 1 and boosts agree).
            value[node] = total[node] if is_end[node] else value[up] + credit_in[node]
            committed = value[node] - base[up] if is_end[node] else 0.0
            base[node] = value[node] if is_end[node] else base[up]
            held[node] = value[node] - base[node]
            gain[node] = committed + gain[fail[node]]
            back = fail[node]
            if children[node]:
                table = dict(trans[back])
                table.update(children[node])
                trans[node] = table
            else:
                trans[node] = trans[back]
            for token, child in children[node].items():
                target = trans[back].get(token)
                if target is None:
                    target = _ROOT_START if token == space else _ROOT_MID
                fail[child] = target
                queue.append(child)

        self._trans = trans
        self._continuations = [(), (), *(tuple(sorted(c)) for c in children[2:])]
        self._held = held
        self._enter = [g + h for g, h in zip(gain, held, strict=True)]
        final = [0.0] * n
        for node in range(n):
            after = trans[node].get(space, _ROOT_START)
            final[node] = gain[after] - held[node]
        self._final = final
        self._states = [_Node(self, i) for i in range(n)]

    # -- use --------------------------------------------------------------------------------------------

    def initial_state(self) -> BiasState:
        """The state a new hypothesis starts in (at a word start, nothing matched)."""
        return self._states[_ROOT_START]

    def __len__(self) -> int:
        return len(self.phrases)

    @property
    def num_states(self) -> int:
        return len(self._states)

    def token_bonuses(self, token_ids: Iterable[int]) -> tuple[float, ...]:
        """The bonus each token of a finished hypothesis got, the final correction added to the last one.

        They sum to the hypothesis' ``bias_score``; attached to a hypothesis as ``token_bias_scores`` they put
        each name's credit on its own lattice arc (see :mod:`daemon.lattice`).
        """
        state = self.initial_state()
        bonuses = []
        for token in token_ids:
            state, bonus = state.advance(token)
            bonuses.append(bonus)
        if bonuses:
            bonuses[-1] += state.final_bonus()
        return tuple(bonuses)

    def score_tokens(self, token_ids: Iterable[int]) -> float:
        """The total bias a finished hypothesis with these tokens gets (bonuses plus the final correction)."""
        return sum(self.token_bonuses(token_ids))

    def score_text(self, text: str) -> float:
        """:meth:`score_tokens` of a normalised text."""
        return self.score_tokens(self.tokens.encode(text))


class BiasGraphCache:
    """Builds the graph of a bias list once and hands out initial states: the pipeline's ``make_bias`` hook.

    ``cache(document)`` returns the initial state of ``document``'s graph; the graph is rebuilt only when
    a different document comes (compared by identity, then by value). Safe to call from several threads.
    """

    def __init__(self, tokens: TokenTable, score: float = DEFAULT_BOOST, *, possessives: bool = True,
                 hold: float = DEFAULT_HOLD) -> None:
        self.tokens = tokens
        self.score = score
        self.possessives = possessives
        self.hold = hold
        self._lock = threading.Lock()
        self._document: BiasSet | None = None
        self._graph: BiasGraph | None = None

    def graph(self, document: BiasSet) -> BiasGraph:
        with self._lock:
            if self._graph is not None and (document is self._document or document == self._document):
                return self._graph
        graph = BiasGraph.from_document(document, self.tokens, self.score, possessives=self.possessives,
                                        hold=self.hold)
        log.info("bias list %s: %d phrases, %d graph states", document.version or "(unversioned)",
                 len(graph), graph.num_states)
        with self._lock:
            self._document, self._graph = document, graph
        return graph

    def __call__(self, document: BiasSet) -> BiasState:
        return self.graph(document).initial_state()

"""In-domain command corpus for a home voice assistant, with held-out names and appliances.

Sentences come from templates (calls and messages, appliance control and status, timers, alarms,
reminders, media, time and weather) filled from slot lists in ``training/slots/``. Every sentence is
normalised with :func:`daemon.textnorm.normalize` and carries the character spans of its contact and
appliance entities.

The held-out split is fixed by hashing, not by the seed: a name word (a first name, last name or nickname
word) is held out when its hash falls in the test bucket, and a name entry containing such a word is a test
entry; an appliance phrase (room + device, or a named device) is held out the same way. Words that the
templates or the other slots also use ("will", "rose", "oh") are never held out, so a held-out word truly
never occurs in a training sentence; :func:`generate` also rejects any training sentence that breaks this.
Test sentences take their contacts and appliances only from the held-out pools.

The name lists were made once from the ``faker`` package by :func:`build_slot_files` (run
``python -m training.text_corpus build-slots``); generating the corpus needs only the files.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import logging
import random
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from daemon.textnorm import normalize, spoken_number, spoken_ordinal

logger = logging.getLogger(__name__)

SLOTS_DIR = Path(__file__).resolve().parent / "slots"

ENTITY_KINDS = ("contact", "appliance")
SPLITS = ("train", "test")

#: Fraction (per thousand) of name words and appliance phrases that are held out for the test split.
HOLDOUT_PER_MILLE = 100
_HOLDOUT_SALT = "harkd-holdout-v1"

MIN_WORDS = 3
MAX_WORDS = 16
_MAX_TRIES = 200


# ---------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entity:
    """A contact or appliance mention: ``text`` is ``utterance.text[start:end]`` (normalised)."""

    kind: str
    text: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.kind not in ENTITY_KINDS:
            raise ValueError(f"entity kind must be one of {ENTITY_KINDS}, got {self.kind!r}")
        if not 0 <= self.start < self.end or self.end - self.start != len(self.text):
            raise ValueError(f"entity span [{self.start}, {self.end}) does not fit text {self.text!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "start": self.start, "end": self.end}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entity:
        return cls(
            kind=str(data["kind"]), text=str(data["text"]), start=int(data["start"]), end=int(data["end"])
        )


@dataclass(frozen=True)
class Utterance:
    """One normalised sentence and the entities in it."""

    text: str
    entities: tuple[Entity, ...] = ()

    def __post_init__(self) -> None:
        for entity in self.entities:
            if self.text[entity.start : entity.end] != entity.text:
                raise ValueError(
                    f"entity {entity.text!r} does not match text[{entity.start}:{entity.end}] "
                    f"= {self.text[entity.start : entity.end]!r} in {self.text!r}"
                )

    @property
    def words(self) -> list[str]:
        return self.text.split()

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "entities": [e.to_dict() for e in self.entities]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Utterance:
        entities = tuple(Entity.from_dict(e) for e in data.get("entities", ()))
        return cls(text=str(data["text"]), entities=entities)


@dataclass(frozen=True)
class CorpusSplit:
    """Which names and appliances may appear in training sentences and which only in test sentences.

    ``train_names``/``test_names`` are name entries (first names, last names, nicknames; normalised);
    ``held_out_words`` are the name words that never occur in a training sentence (every test name has at
    least one). ``train_appliances``/``test_appliances`` are appliance phrases (room + device and named
    devices); test sentences also use possessive appliances built on test first names ("maria's lamp").
    """

    train_names: tuple[str, ...]
    test_names: tuple[str, ...]
    train_appliances: tuple[str, ...]
    test_appliances: tuple[str, ...]
    held_out_words: frozenset[str]


# ---------------------------------------------------------------------------------------------------------
# Templates (in training/slots/templates.txt) and the words around them
# ---------------------------------------------------------------------------------------------------------

TEMPLATES_FILE = "templates.txt"

# Openers and closers, with "" repeated to make it the most likely.
REQUEST_OPENERS = (
    *[""] * 12,
    "please",
    "can you",
    "could you",
    "hey",
    "okay",
    "right",
    "hey can you",
    "would you",
    "i need you to",
    "can you please",
)
REQUEST_CLOSERS = (*[""] * 10, "please", "for me", "thanks", "thank you", "now", "for me please", "right now")
QUESTION_OPENERS = (*[""] * 8, "hey", "okay", "excuse me", "quick question")

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
)  # fmt: skip
DAY_PHRASES = (
    "today", "tomorrow", "tonight", "this evening", "this afternoon", "this morning", "tomorrow morning",
    "tomorrow night", "this weekend", "on the weekend", "next week",
)  # fmt: skip
COLOURS = (
    "red", "blue", "green", "purple", "orange", "pink", "yellow", "warm white", "cool white", "daylight",
    "candlelight", "teal",
)  # fmt: skip
TIMER_NAMES = ("pasta", "egg", "pizza", "rice", "tea", "oven", "laundry", "bread", "cake", "potato", "nap")
MINUTE_CHOICES = (1, 2, 3, 4, 5, 5, 5, 10, 10, 10, 12, 15, 15, 20, 20, 25, 30, 30, 35, 40, 45, 45, 50, 90)
SECOND_CHOICES = (10, 15, 20, 30, 30, 45, 90)
TIME_WORDS = (
    "half past", "quarter past", "quarter to", "past", "to", "o'clock", "in the morning", "in the evening",
    "in the afternoon", "at night", "noon", "midday", "midnight", "tonight", "a m", "p m", "oh",
)  # fmt: skip
DURATION_PHRASES = (
    "a minute", "an hour", "half an hour", "an hour and a half", "a couple of minutes", "a few minutes",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Slot files
# ---------------------------------------------------------------------------------------------------------


def _read_lines(name: str) -> list[str]:
    path = SLOTS_DIR / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"slot file {path} is missing; run `python -m training.text_corpus build-slots`"
        ) from exc
    return [line.rstrip("\n") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _read_table(name: str, columns: int) -> list[tuple[str, ...]]:
    rows = []
    for line in _read_lines(name):
        fields = tuple(f.strip() for f in line.split("\t"))
        if len(fields) != columns:
            raise ValueError(f"{SLOTS_DIR / name}: expected {columns} tab-separated fields in {line!r}")
        rows.append(fields)
    return rows


def _norm_all(items: Iterable[str]) -> tuple[str, ...]:
    """Normalise, drop empties and duplicates, keep first-seen order."""
    seen: dict[str, None] = {}
    for item in items:
        text = normalize(item)
        if text:
            seen.setdefault(text, None)
    return tuple(seen)


@dataclass(frozen=True)
class _Appliance:
    text: str  # normalised
    category: str
    possessive: bool = False


@dataclass(frozen=True)
class _Slots:
    first_names: tuple[tuple[str, str], ...]  # (name, origin)
    last_names: tuple[tuple[str, str], ...]
    relations: tuple[str, ...]
    kin_titles: tuple[str, ...]
    titles: tuple[str, ...]
    rooms: tuple[str, ...]
    devices: tuple[tuple[str, str], ...]  # (device, category)
    named_devices: tuple[tuple[str, str], ...]
    possessive_devices: tuple[tuple[str, str], ...]
    messages: tuple[str, ...]
    tasks: tuple[str, ...]
    media: tuple[str, ...]
    cities: tuple[str, ...]


def _names_table(name: str) -> list[tuple[str, str]]:
    return [(n, origin) for n, origin in _read_table(name, 2)]


@lru_cache(maxsize=1)
def _slots() -> _Slots:
    firsts = _names_table("first_names.tsv")
    lasts = _names_table("last_names.tsv")
    for role, name, origin in _read_table("names_extra.tsv", 3):
        target = firsts if role == "first" else lasts
        target.append((name, origin))
    firsts += [(n, "nickname") for n in _read_lines("nicknames.txt")]

    def dedupe(rows: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        seen: dict[str, str] = {}
        for raw, origin in rows:
            text = normalize(raw)
            if text:
                seen.setdefault(text, origin)
        return tuple(sorted(seen.items()))

    def table(name: str) -> tuple[tuple[str, str], ...]:
        return tuple((normalize(a), b) for a, b in _read_table(name, 2))

    return _Slots(
        first_names=dedupe(firsts),
        last_names=dedupe(lasts),
        relations=_norm_all(_read_lines("relations.txt")),
        kin_titles=_norm_all(_read_lines("kin_titles.txt")),
        titles=_norm_all(_read_lines("titles.txt")),
        rooms=_norm_all(_read_lines("rooms.txt")),
        devices=table("devices.tsv"),
        named_devices=table("named_devices.tsv"),
        possessive_devices=table("possessive_devices.tsv"),
        messages=_norm_all(_read_lines("messages.txt")),
        tasks=_norm_all(_read_lines("tasks.txt")),
        media=_norm_all(_read_lines("media.txt")),
        cities=_norm_all(_read_lines("cities.txt")),
    )


@dataclass(frozen=True)
class TemplateGroup:
    """Templates of one kind of command and the group's sampling weight."""

    name: str
    weight: float
    templates: tuple[str, ...]


_GROUP_RE = re.compile(r"^\[(?P<name>[a-z_]+)\s+(?P<weight>[0-9.]+)\]$")
_SLOT_NAMES = frozenset(
    {
        "contact", "contact's", "be", "percent", "degrees", "duration", "duration_adj", "time", "when", "day",
        "date", "weekday", "message", "task", "media", "city", "volume", "room", "colour", "timer_name",
    }
)  # fmt: skip


def _check_template(template: str, where: str) -> None:
    body = template[1:] if template[:1] in "?!" else template
    for opener, closer in ("()", "[]", "{}"):
        depth = 0
        for ch in body:
            depth += (ch == opener) - (ch == closer)
            if depth not in (0, 1):
                raise ValueError(f"{where}: unbalanced or nested {opener}{closer} in {template!r}")
        if depth:
            raise ValueError(f"{where}: unbalanced {opener}{closer} in {template!r}")
    for name in re.findall(r"\{([^}]*)\}", body):
        category = name.removeprefix("the:")
        if name not in _SLOT_NAMES and category not in (*APPLIANCE_CATEGORIES, "onoff", "any"):
            raise ValueError(f"{where}: unknown slot {{{name}}} in {template!r}")


@lru_cache(maxsize=1)
def _templates() -> tuple[TemplateGroup, ...]:
    parsed: list[tuple[str, float, list[str]]] = []
    for number, raw in enumerate(_read_lines(TEMPLATES_FILE), start=1):
        line = raw.strip()
        header = _GROUP_RE.match(line)
        if header:
            parsed.append((header["name"], float(header["weight"]), []))
            continue
        where = f"{SLOTS_DIR / TEMPLATES_FILE} (line {number} without comments)"
        if not parsed:
            raise ValueError(f"{where}: template before the first [group weight] line")
        _check_template(line, where)
        parsed[-1][2].append(line)
    groups = tuple(TemplateGroup(name, weight, tuple(templates)) for name, weight, templates in parsed)
    if not groups or any(not g.templates or g.weight <= 0 for g in groups):
        raise ValueError(f"{SLOTS_DIR / TEMPLATES_FILE}: every group needs a positive weight and templates")
    return groups


def template_groups() -> tuple[TemplateGroup, ...]:
    """The template groups read from ``training/slots/templates.txt``."""
    return _templates()


# ---------------------------------------------------------------------------------------------------------
# The held-out split
# ---------------------------------------------------------------------------------------------------------


def _held_out(key: str) -> bool:
    digest = hashlib.sha256(f"{_HOLDOUT_SALT}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < HOLDOUT_PER_MILLE


def _words_of(text: str) -> list[str]:
    """Words for the held-out checks: a possessive "'s" does not make a new word."""
    return [w[:-2] if w.endswith("'s") else w for w in text.split()]


def _ngrams(words: Sequence[str], max_n: int) -> Iterator[str]:
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            yield " ".join(words[i : i + n])


def _template_words() -> set[str]:
    words: set[str] = set()
    for group in _templates():
        for template in group.templates:
            literal = re.sub(r"\{[^}]*\}", " ", template)
            words.update(_words_of(normalize(literal.replace("|", " "))))
    return words


def _fixed_texts(slots: _Slots) -> list[str]:
    """Every text other than names and appliance phrases that can end up in a sentence."""
    texts: list[str] = [*slots.relations, *slots.kin_titles, *slots.titles, *slots.rooms]
    texts += [*slots.messages, *slots.tasks, *slots.media, *slots.cities]
    texts += [*REQUEST_OPENERS, *REQUEST_CLOSERS, *QUESTION_OPENERS, *WEEKDAYS, *MONTHS, *DAY_PHRASES]
    texts += [*COLOURS, *TIMER_NAMES, *TIME_WORDS, *DURATION_PHRASES, "is are the every on at and of"]
    texts += [spoken_number(n) for n in range(0, 125)]
    texts += [spoken_ordinal(n) for n in range(1, 32)]
    texts += ["minute minutes second seconds hour hours degree degrees celsius fahrenheit percent point"]
    return [normalize(t) for t in texts]


@dataclass(frozen=True)
class _Pools:
    """Everything one split draws from."""

    first_by_origin: Mapping[str, tuple[str, ...]]
    last_by_origin: Mapping[str, tuple[str, ...]]
    relations: tuple[str, ...]
    appliances_by_category: Mapping[str, tuple[_Appliance, ...]]
    possessive_devices_by_category: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class _Built:
    split: CorpusSplit
    pools: Mapping[str, _Pools]
    held_out_appliances: frozenset[str]
    max_appliance_words: int


APPLIANCE_CATEGORIES = ("light", "switch", "cover", "lock", "climate")


def _group_by_origin(rows: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for name, origin in rows:
        grouped[origin].append(name)
    return {origin: tuple(sorted(names)) for origin, names in sorted(grouped.items())}


@lru_cache(maxsize=1)
def _build() -> _Built:
    slots = _slots()
    fixed_words = _template_words()
    fixed_texts = _fixed_texts(slots)
    for text in fixed_texts:
        fixed_words.update(_words_of(text))

    # Names: decide word by word, then classify entries.
    name_words = {w for name, _ in (*slots.first_names, *slots.last_names) for w in name.split()}
    held_words = frozenset(w for w in name_words if w not in fixed_words and _held_out(w))

    def is_test(name: str) -> bool:
        return any(w in held_words for w in name.split())

    train_first = [(n, o) for n, o in slots.first_names if not is_test(n)]
    test_first = [(n, o) for n, o in slots.first_names if is_test(n)]
    train_last = [(n, o) for n, o in slots.last_names if not is_test(n)]
    test_last = [(n, o) for n, o in slots.last_names if is_test(n)]

    # Appliances: a phrase may be held out only if no other phrase or fixed text contains it.
    combos = [
        _Appliance(f"{room} {device}", category) for room in slots.rooms for device, category in slots.devices
    ]
    named = [_Appliance(device, category) for device, category in slots.named_devices]
    candidates = combos + named
    all_phrases = [a.text for a in candidates] + [d for d, _ in slots.possessive_devices] + fixed_texts
    containing: dict[str, int] = defaultdict(int)
    max_words = max(len(a.text.split()) for a in candidates)
    for phrase in set(all_phrases):
        for gram in set(_ngrams(phrase.split(), max_words)):
            containing[gram] += 1
    held_appliances = frozenset(
        a.text for a in candidates if containing[a.text] == 1 and _held_out("appliance:" + a.text)
    )

    def appliance_pool(test: bool) -> dict[str, tuple[_Appliance, ...]]:
        pool: dict[str, list[_Appliance]] = {c: [] for c in APPLIANCE_CATEGORIES}
        for a in candidates:
            if (a.text in held_appliances) == test:
                pool[a.category].append(a)
        return {c: tuple(sorted(v, key=lambda a: a.text)) for c, v in pool.items()}

    possessive: dict[str, list[str]] = defaultdict(list)
    for device, category in slots.possessive_devices:
        possessive[category].append(device)

    pools = {
        "train": _Pools(
            first_by_origin=_group_by_origin(train_first),
            last_by_origin=_group_by_origin(train_last),
            relations=slots.relations,
            appliances_by_category=appliance_pool(test=False),
            possessive_devices_by_category={k: tuple(v) for k, v in possessive.items()},
        ),
        "test": _Pools(
            first_by_origin=_group_by_origin(test_first),
            last_by_origin=_group_by_origin(test_last),
            relations=(),
            appliances_by_category=appliance_pool(test=True),
            possessive_devices_by_category={k: tuple(v) for k, v in possessive.items()},
        ),
    }
    for split_name, pool in pools.items():
        for category, items in pool.appliances_by_category.items():
            if not items:
                raise RuntimeError(f"no {split_name} appliances of category {category!r}; widen the hold-out")
        if not pool.first_by_origin or not pool.last_by_origin:
            raise RuntimeError(f"no {split_name} names; check training/slots")

    split = CorpusSplit(
        train_names=tuple(sorted({n for n, _ in (*train_first, *train_last)})),
        test_names=tuple(sorted({n for n, _ in (*test_first, *test_last)})),
        train_appliances=tuple(sorted(a.text for a in candidates if a.text not in held_appliances)),
        test_appliances=tuple(sorted(held_appliances)),
        held_out_words=held_words,
    )
    return _Built(
        split=split, pools=pools, held_out_appliances=held_appliances, max_appliance_words=max_words
    )


def corpus_split() -> CorpusSplit:
    """The fixed train/test division of names and appliances."""
    return _build().split


def holdout_entities() -> dict[str, tuple[str, ...]]:
    """Held-out entity texts by kind, for biasing experiments: ``{"contact": ..., "appliance": ...}``.

    Contacts are the held-out name entries (first names, last names, nicknames); appliances are the
    held-out room + device and named-device phrases.
    """
    split = corpus_split()
    return {"contact": split.test_names, "appliance": split.test_appliances}


def violates_holdout(text: str) -> bool:
    """True when ``text`` contains a held-out name word or a held-out appliance phrase."""
    built = _build()
    words = _words_of(text)
    if any(w in built.split.held_out_words for w in words):
        return True
    return any(g in built.held_out_appliances for g in _ngrams(words, built.max_appliance_words))


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------

_ALTERNATIVES_RE = re.compile(r"\(([^()]*)\)")
_OPTIONAL_RE = re.compile(r"\[([^\[\]]*)\]")
_SLOT_RE = re.compile(r"\{([^}]+)\}")


@lru_cache(maxsize=65536)
def _norm(text: str) -> str:
    return normalize(text)


def _expand(template: str, rng: random.Random) -> str:
    text = _ALTERNATIVES_RE.sub(lambda m: rng.choice(m[1].split("|")), template)
    return _OPTIONAL_RE.sub(lambda m: m[1] if rng.random() < 0.5 else "", text)


@dataclass(frozen=True)
class _Piece:
    text: str  # normalised, or "{be}" until resolved
    kind: str | None = None
    attach: bool = False  # joined to the previous piece without a space


def _is_plural(phrase: str) -> bool:
    last = phrase.split()[-1]
    return last.endswith("s") and not last.endswith("ss")


class _Renderer:
    """Fills one template for one split with one random generator."""

    def __init__(self, pools: _Pools, rng: random.Random) -> None:
        self.pools = pools
        self.rng = rng

    # Names ---------------------------------------------------------------------------------------------

    def _pick(self, by_origin: Mapping[str, tuple[str, ...]]) -> str:
        origin = self.rng.choice(list(by_origin))
        return self.rng.choice(by_origin[origin])

    def first_name(self) -> str:
        return self._pick(self.pools.first_by_origin)

    def last_name(self) -> str:
        return self._pick(self.pools.last_by_origin)

    def contact(self) -> str:
        slots = _slots()
        forms = ["first", "first last", "title last", "title first last", "kin first", "relation"]
        weights = [30, 30, 12, 5, 8, 15 if self.pools.relations else 0]
        form = self.rng.choices(forms, weights)[0]
        if form == "first":
            return self.first_name()
        if form == "first last":
            return f"{self.first_name()} {self.last_name()}"
        if form == "title last":
            return f"{self.rng.choice(slots.titles)} {self.last_name()}"
        if form == "title first last":
            return f"{self.rng.choice(slots.titles)} {self.first_name()} {self.last_name()}"
        if form == "kin first":
            return f"{self.rng.choice(slots.kin_titles)} {self.first_name()}"
        return self.rng.choice(self.pools.relations)

    # Appliances ----------------------------------------------------------------------------------------

    def appliance(self, category: str) -> _Appliance:
        if category == "onoff":
            category = self.rng.choice(("light", "switch"))
        elif category == "any":
            category = self.rng.choice(APPLIANCE_CATEGORIES)
        if category not in APPLIANCE_CATEGORIES:
            raise ValueError(f"unknown appliance category {category!r}")
        possessive = self.pools.possessive_devices_by_category.get(category, ())
        if possessive and self.rng.random() < 0.15:
            owner = self.first_name()
            return _Appliance(f"{owner}'s {self.rng.choice(possessive)}", category, possessive=True)
        return self.rng.choice(self.pools.appliances_by_category[category])

    # Numbers, times ------------------------------------------------------------------------------------

    def percent(self) -> str:
        value = self.rng.choice((*range(10, 101, 10), *range(5, 100, 5), 1, 2, 3, 33, 75, 100))
        return self.rng.choice((f"{value}%", f"{value} percent", f"{value} %"))

    def degrees(self) -> str:
        if self.rng.random() < 0.8:
            value: float = self.rng.randint(15, 26) + (0.5 if self.rng.random() < 0.15 else 0)
            text = f"{value:g}"
            return self.rng.choice((f"{text} degrees", f"{text}°", f"{text}°C", f"{text} degrees celsius"))
        text = str(self.rng.randint(60, 78))
        return self.rng.choice((f"{text} degrees", f"{text}°F", f"{text} degrees fahrenheit"))

    def volume(self) -> str:
        if self.rng.random() < 0.6:
            return str(self.rng.randint(0, 10))
        return self.percent()

    def duration(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.55:
            n = rng.choice(MINUTE_CHOICES)
            unit = "minute" if n == 1 else "minutes"
            short = "min" if n == 1 else "mins"
            return rng.choice((f"{n} {unit}", f"{n} {short}", f"{spoken_number(n)} {unit}"))
        if roll < 0.7:
            n = rng.choice(SECOND_CHOICES)
            return rng.choice((f"{n} seconds", f"{n} secs", f"{spoken_number(n)} seconds"))
        if roll < 0.85:
            n = rng.randint(1, 12)
            unit = "hour" if n == 1 else "hours"
            extra = rng.choice(("", "", "", " and 30 minutes", " and 15 minutes", " and a half"))
            if extra == " and a half" and n > 1:
                return f"{n} and a half hours"
            return f"{n} {unit}{extra}"
        return rng.choice(DURATION_PHRASES)

    def duration_adj(self) -> str:
        if self.rng.random() < 0.8:
            n = self.rng.choice(MINUTE_CHOICES)
            return self.rng.choice((f"{n} minute", spoken_number(n) + " minute"))
        if self.rng.random() < 0.5:
            return f"{self.rng.choice(SECOND_CHOICES)} second"
        return f"{self.rng.randint(1, 3)} hour"

    def time(self) -> str:
        rng = self.rng
        hour = rng.randint(1, 12)
        minute = rng.choice((0, 0, 0, 0, 15, 30, 30, 45, 5, 10, 20, 25, 40, 50, 55, rng.randint(1, 59)))
        meridiem = rng.choice(("am", "pm"))
        roll = rng.random()
        if roll < 0.06:
            return rng.choice(("noon", "midday", "midnight"))
        if roll < 0.4:
            if minute == 0:
                forms = (f"{hour}{meridiem}", f"{hour} {meridiem}", f"{hour}:00 {meridiem}", f"{hour}:00")
                return rng.choice(forms)
            clock = f"{hour}:{minute:02d}"
            return rng.choice((clock, f"{clock} {meridiem}", f"{clock}{meridiem}"))
        if roll < 0.5:
            return f"{(hour % 12) + 12 if meridiem == 'pm' else hour}:{minute:02d}"
        if roll < 0.7 and minute in (15, 30, 45, 5, 10, 20, 25, 40, 50, 55):
            word = spoken_number(hour)
            nxt = spoken_number(hour % 12 + 1)
            phrase = {
                15: f"quarter past {word}",
                30: f"half past {word}",
                45: f"quarter to {nxt}",
            }.get(minute)
            if phrase is None:
                if minute < 30:
                    phrase = f"{spoken_number(minute)} past {word}"
                else:
                    phrase = f"{spoken_number(60 - minute)} to {nxt}"
            return phrase + rng.choice(("", "", " in the morning", " in the evening", " tonight"))
        words = spoken_number(hour)
        if minute == 0:
            return words + rng.choice((" o'clock", "", " in the morning", " in the afternoon", " at night"))
        tail = f"oh {spoken_number(minute)}" if minute < 10 else spoken_number(minute)
        return f"{words} {tail}" + rng.choice(("", "", " a m", " p m", " tonight"))

    def date(self) -> str:
        day = self.rng.randint(1, 31 if self.rng.random() < 0.5 else 28)
        month = self.rng.choice(MONTHS)
        suffix = spoken_ordinal(day).split()[-1][-2:]
        written = f"{day}{suffix}"
        return self.rng.choice((f"{month} {written}", f"the {written} of {month}", f"{month} {day}"))

    def day(self) -> str:
        roll = self.rng.random()
        if roll < 0.45:
            return self.rng.choice(DAY_PHRASES)
        if roll < 0.8:
            return self.rng.choice(("on ", "next ", "this ", "")) + self.rng.choice(WEEKDAYS)
        return "on " + self.date()

    def when(self) -> str:
        roll = self.rng.random()
        if roll < 0.35:
            return f"at {self.time()}"
        if roll < 0.6:
            return f"{self.day()} at {self.time()}"
        if roll < 0.75:
            return self.day()
        if roll < 0.9:
            return f"in {self.duration()}"
        return f"every {self.rng.choice(WEEKDAYS)} at {self.time()}"

    # Templates -----------------------------------------------------------------------------------------

    def slot(self, name: str) -> list[_Piece]:
        slots = _slots()
        rng = self.rng
        if name in ("contact", "contact's"):
            pieces = [_Piece(self.contact(), "contact")]
            if name == "contact's":
                pieces.append(_Piece("'s", attach=True))
            return pieces
        if name.startswith("the:") or name in (*APPLIANCE_CATEGORIES, "onoff", "any"):
            with_article = name.startswith("the:")
            appliance = self.appliance(name.removeprefix("the:"))
            article = [_Piece("the")] if with_article and not appliance.possessive else []
            return [*article, _Piece(appliance.text, "appliance")]
        if name == "be":
            return [_Piece("{be}")]
        simple: dict[str, Callable[[], str]] = {
            "percent": self.percent,
            "degrees": self.degrees,
            "volume": self.volume,
            "duration": self.duration,
            "duration_adj": self.duration_adj,
            "time": self.time,
            "when": self.when,
            "day": self.day,
            "date": self.date,
            "message": lambda: rng.choice(slots.messages),
            "task": lambda: rng.choice(slots.tasks),
            "media": lambda: rng.choice(slots.media),
            "city": lambda: rng.choice(slots.cities),
            "room": lambda: rng.choice(slots.rooms),
            "colour": lambda: rng.choice(COLOURS),
            "timer_name": lambda: rng.choice(TIMER_NAMES),
            "weekday": lambda: rng.choice(WEEKDAYS),
        }
        if name not in simple:
            raise ValueError(f"unknown slot {{{name}}}")
        return [_Piece(_norm(simple[name]()))]

    def render(self, template: str) -> Utterance:
        kind = "request"
        if template[0] in "?!":
            kind = "question" if template[0] == "?" else "bare"
            template = template[1:]
        expanded = _expand(template, self.rng)
        pieces: list[_Piece] = []
        if kind == "request":
            pieces.append(_Piece(_norm(self.rng.choice(REQUEST_OPENERS))))
        elif kind == "question":
            pieces.append(_Piece(_norm(self.rng.choice(QUESTION_OPENERS))))
        position = 0
        for match in _SLOT_RE.finditer(expanded):
            pieces.append(_Piece(_norm(expanded[position : match.start()])))
            pieces += self.slot(match[1])
            position = match.end()
        pieces.append(_Piece(_norm(expanded[position:])))
        if kind == "request":
            pieces.append(_Piece(_norm(self.rng.choice(REQUEST_CLOSERS))))
        return _join(pieces)


def _join(pieces: list[_Piece]) -> Utterance:
    first_appliance = next((p.text for p in pieces if p.kind == "appliance"), "")
    be = "are" if first_appliance and _is_plural(first_appliance) else "is"
    parts: list[str] = []
    entities: list[Entity] = []
    length = 0
    for piece in pieces:
        text = be if piece.text == "{be}" else piece.text
        if not text:
            continue
        if parts and not piece.attach:
            parts.append(" ")
            length += 1
        if piece.kind is not None:
            entities.append(Entity(piece.kind, text, length, length + len(text)))
        parts.append(text)
        length += len(text)
    return Utterance("".join(parts), tuple(entities))


def template_count() -> int:
    """How many templates there are (before alternatives are expanded)."""
    return sum(len(g.templates) for g in _templates())


def generate(n: int, split: str = "train", seed: int = 0) -> list[Utterance]:
    """``n`` sentences for ``split`` ("train" or "test"), the same for the same ``seed``.

    Sentences have between :data:`MIN_WORDS` and :data:`MAX_WORDS` words. Training sentences never contain
    a held-out name word or appliance phrase; test sentences take every contact and appliance from the
    held-out pools.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    built = _build()
    rng = random.Random(f"harkd-corpus:{split}:{seed}")
    renderer = _Renderer(built.pools[split], rng)
    groups = _templates()
    weights = [g.weight for g in groups]
    out: list[Utterance] = []
    for _ in range(n):
        for _attempt in range(_MAX_TRIES):
            group = rng.choices(groups, weights)[0]
            utterance = renderer.render(rng.choice(group.templates))
            if not MIN_WORDS <= len(utterance.words) <= MAX_WORDS:
                continue
            if split == "train" and violates_holdout(utterance.text):
                continue
            break
        else:  # pragma: no cover - the templates make this practically impossible
            raise RuntimeError(f"no acceptable {split} sentence in {_MAX_TRIES} tries")
        out.append(utterance)
    return out


def corpus_stats(n: int = 20000, seed: int = 0) -> dict[str, int]:
    """Sizes of the corpus: templates, names and appliances per split, distinct sentences in ``n``."""
    split = corpus_split()
    train = generate(n, "train", seed)
    test = generate(n, "test", seed)
    return {
        "templates": template_count(),
        "train_names": len(split.train_names),
        "test_names": len(split.test_names),
        "held_out_name_words": len(split.held_out_words),
        "train_appliances": len(split.train_appliances),
        "test_appliances": len(split.test_appliances),
        f"distinct_train_sentences_in_{n}": len({u.text for u in train}),
        f"distinct_test_sentences_in_{n}": len({u.text for u in test}),
    }


# ---------------------------------------------------------------------------------------------------------
# Building the name files from faker (once; the files are committed)
# ---------------------------------------------------------------------------------------------------------

# origin -> faker locales; first names and last names are read from each locale's person provider.
NAME_ORIGINS: dict[str, tuple[str, ...]] = {
    "english": ("en_US", "en_GB", "en_NZ", "en"),
    "irish": ("en_IE",),
    "spanish": ("es_ES", "es_MX", "es_AR", "es_CO", "es_CL"),
    "catalan": ("es_CA",),
    "portuguese": ("pt_PT", "pt_BR"),
    "italian": ("it_IT",),
    "french": ("fr_FR", "fr_CA", "fr_CH"),
    "german": ("de_DE", "de_AT", "de_CH"),
    "dutch": ("nl_NL", "nl_BE"),
    "polish": ("pl_PL",),
    "czech_slovak": ("cs_CZ", "sk_SK"),
    "hungarian": ("hu_HU",),
    "romanian": ("ro_RO",),
    "nordic": ("da_DK", "sv_SE", "no_NO"),
    "finnish": ("fi_FI",),
    "baltic": ("lt_LT", "lv_LV", "et_EE"),
    "balkan": ("hr_HR", "sl_SI", "bg_BG", "mk_MK"),
    "russian": ("ru_RU",),
    "ukrainian": ("uk_UA",),
    "greek": ("el_GR",),
    "turkish": ("tr_TR",),
    "azerbaijani": ("az_AZ",),
    "uzbek": ("uz_UZ",),
    "algerian": ("fr_DZ",),
    "pakistani": ("en_PK",),
    "indian": ("en_IN",),
    "chinese": ("zh_CN", "zh_TW"),
    "japanese": ("ja_JP",),
    "korean": ("ko_KR",),
    "vietnamese": ("vi_VN",),
    "thai": ("en_TH",),
    "indonesian": ("id_ID",),
    "nigerian": ("yo_NG", "ig_NG", "ha_NG", "en_NG"),
    "east_african": ("en_KE", "sw"),
    "ghanaian": ("tw_GH",),
    "south_african": ("zu_ZA",),
    "irish_gaelic": ("ga_IE",),
}
# Locales whose last-name list is not usable as spoken surnames (Irish-language grammatical forms).
_NO_LAST_NAMES = frozenset({"ga_IE"})
NAMES_PER_ORIGIN = 400

# Korean surnames in their usual English spelling (the systematic romanisation would give "gim", "i").
_KOREAN_SURNAMES = {
    "김": "kim", "이": "lee", "박": "park", "정": "jung", "최": "choi", "조": "cho", "강": "kang",
    "윤": "yoon", "장": "jang", "임": "lim", "한": "han", "오": "oh", "서": "seo", "신": "shin",
    "권": "kwon", "황": "hwang", "안": "ahn", "송": "song", "류": "ryu", "전": "jeon", "홍": "hong",
    "고": "ko", "문": "moon", "양": "yang", "손": "son", "배": "bae", "백": "baek", "허": "heo",
    "유": "yoo", "남": "nam", "심": "shim", "노": "noh", "하": "ha", "곽": "kwak", "성": "sung",
    "차": "cha", "주": "joo", "우": "woo", "구": "koo", "나": "na", "민": "min", "진": "jin",
    "지": "ji", "엄": "eom",
}  # fmt: skip
_HANGUL_INITIALS = "g kk n d tt r m b pp s ss - j jj ch k t p h".split()
_HANGUL_VOWELS = "a ae ya yae eo e yeo ye o wa wae oe yo u wo we wi yu eu ui i".split()
_HANGUL_FINALS = "- k k k n n n t l k m l l l p l m p p t t ng t t k t p t".split()


def romanize_hangul(text: str) -> str:
    """Revised Romanization of Hangul syllables, syllable by syllable (no sound-change rules)."""
    out: list[str] = []
    for ch in text:
        code = ord(ch) - 0xAC00
        if not 0 <= code < 11172:
            out.append(ch)
            continue
        initial, rest = divmod(code, 588)
        vowel, final = divmod(rest, 28)
        parts = (_HANGUL_INITIALS[initial], _HANGUL_VOWELS[vowel], _HANGUL_FINALS[final])
        out.append("".join(p for p in parts if p != "-"))
    return "".join(out)


def _as_list(values: object) -> list[str]:
    if values is None:
        return []
    if isinstance(values, Mapping):
        return [str(k) for k in values]
    if isinstance(values, (list, tuple)):
        return [str(v) for v in values]
    return []


def _locale_names(locale: str) -> tuple[list[str], list[str]]:
    """First and last names of one faker locale, romanised where the locale's script is not Latin."""
    from faker import Generator  # training-only dependency

    module = importlib.import_module(f"faker.providers.person.{locale}")
    provider = module.Provider(Generator())

    def attr(*names: str) -> list[str]:
        values: list[str] = []
        for name in names:
            values += _as_list(getattr(provider, name, None))
        return values

    if locale in ("ja_JP", "zh_CN", "zh_TW"):
        firsts = attr("first_romanized_names", "first_romanized_names_male", "first_romanized_names_female")
        lasts = attr("last_romanized_names")
    elif locale == "ko_KR":
        firsts = [romanize_hangul(n) for n in attr("first_names")]
        lasts = [_KOREAN_SURNAMES.get(n, romanize_hangul(n)) for n in attr("last_names")]
    else:
        firsts = attr("first_names", "first_names_male", "first_names_female", "first_names_unisex")
        lasts = attr(
            "last_names", "last_names_male", "last_names_female", "male_last_names", "unisex_last_names"
        )
    if locale in _NO_LAST_NAMES:
        lasts = []
    return firsts, lasts


def _usable_name(name: str) -> bool:
    words = name.split()
    return 1 <= len(words) <= 3 and all(len(w) >= 2 for w in words) and len(name) <= 24


def _capped(names: Iterable[str], cap: int) -> list[str]:
    """At most ``cap`` names, chosen by hash so the choice does not depend on list order."""
    unique = sorted(set(names))
    if len(unique) > cap:
        unique = sorted(unique, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:cap]
    return sorted(unique)


def build_slot_files(out_dir: Path = SLOTS_DIR, per_origin: int = NAMES_PER_ORIGIN) -> dict[str, int]:
    """Write ``first_names.tsv`` and ``last_names.tsv`` (normalised name, origin) from faker's locales.

    Returns how many first and last names were written. Needs the ``faker`` package (``train`` extra).
    """
    import faker  # training-only dependency

    firsts: dict[str, str] = {}
    lasts: dict[str, str] = {}
    for origin, locales in NAME_ORIGINS.items():
        origin_firsts: list[str] = []
        origin_lasts: list[str] = []
        for locale in locales:
            f, last = _locale_names(locale)
            origin_firsts += [normalize(n) for n in f]
            origin_lasts += [normalize(n) for n in last]
        for name in _capped(filter(_usable_name, origin_firsts), per_origin):
            firsts.setdefault(name, origin)
        for name in _capped(filter(_usable_name, origin_lasts), per_origin):
            lasts.setdefault(name, origin)
    header = (
        f"# name\torigin — generated by training.text_corpus.build_slot_files from faker {faker.VERSION} "
        f"(at most {per_origin} per origin); do not edit by hand.\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename, names in (("first_names.tsv", firsts), ("last_names.tsv", lasts)):
        body = "".join(f"{name}\t{origin}\n" for name, origin in sorted(names.items()))
        (out_dir / filename).write_text(header + body, encoding="utf-8")
        logger.info("wrote %d names to %s", len(names), out_dir / filename)
    _slots.cache_clear()
    _build.cache_clear()
    return {"first_names": len(firsts), "last_names": len(lasts)}


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.text_corpus", description="harkd command corpus."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build-slots", help="write training/slots/{first,last}_names.tsv from faker")
    sample = sub.add_parser("sample", help="print sentences as JSON lines")
    sample.add_argument("-n", type=int, default=20)
    sample.add_argument("--split", choices=SPLITS, default="train")
    sample.add_argument("--seed", type=int, default=0)
    stats = sub.add_parser("stats", help="print corpus sizes")
    stats.add_argument("-n", type=int, default=20000)
    stats.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "build-slots":
        print(build_slot_files())
    elif args.command == "sample":
        import json

        for utterance in generate(args.n, args.split, args.seed):
            print(json.dumps(utterance.to_dict()))
    else:
        for key, value in corpus_stats(args.n, args.seed).items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

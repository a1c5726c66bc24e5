"""vCard 2.1, 3.0 and 4.0 reading: just the names (FN, N, NICKNAME, ORG), tolerant of what phones export.

Handled: folded lines (a line starting with a space or tab continues the one before), vCard 2.1
quoted-printable values with soft line breaks and ``CHARSET`` (``ENCODING=QUOTED-PRINTABLE`` or a bare
``QUOTED-PRINTABLE`` parameter), UTF-8 (with a Windows-1252 fallback for old exports, reported), group
prefixes (``item1.FN``), quoted parameter values, backslash escapes (``\\,`` ``\\;`` ``\\n`` ``\\\\``), N's
structured parts and NICKNAME's comma list. Group cards (``KIND:group``, Apple's
``X-ADDRESSBOOKSERVER-KIND:group``) are skipped: their names are list names, not people.

Bad input never raises: a card without ``END:VCARD``, a line that is not a property, a card without any
name are reported in :attr:`ParseResult.warnings` and everything readable is still returned.
"""

from __future__ import annotations

import logging
import quopri
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["MAX_CARDS", "MAX_VCARD_BYTES", "Card", "ParseResult", "decode_bytes", "parse_vcards", "read_vcard_paths"]

#: Files (and CardDAV responses) larger than this are refused.
MAX_VCARD_BYTES = 32 * 1024 * 1024
#: Cards read from one source at most; the rest are dropped with a warning.
MAX_CARDS = 20000
_MAX_WARNINGS = 50  # per source; then one line says how many more

_BASE64_LINE = re.compile(r"^[A-Za-z0-9+/=]+$")


@dataclass(frozen=True)
class Card:
    """The names on one contact card."""

    formatted: str | None = None  # FN
    family: str | None = None  # N, first part
    given: str | None = None  # N, second part
    additional: str | None = None  # N, middle names
    prefix: str | None = None  # N, honorifics: "Dr."
    suffix: str | None = None  # N: "Jr."
    nicknames: tuple[str, ...] = ()
    organization: str | None = None  # ORG, first part
    source: str = ""  # file and line, or CardDAV href

    @property
    def full_name(self) -> str | None:
        """Given and family name from N, or None."""
        parts = [p for p in (self.given, self.family) if p]
        return " ".join(parts) if parts else None

    def names(self, *, given_names: bool = True) -> list[tuple[str, str]]:
        """The names to bias toward, each with what it is: ``formatted``, ``full``, ``given``, ``nickname``,
        ``organization``. The organisation is only a name when the card has no personal name (a business)."""
        out: list[tuple[str, str]] = []

        def add(name: str | None, what: str) -> None:
            if name and name.strip() and all(name.strip() != n for n, _ in out):
                out.append((name.strip(), what))

        add(self.formatted, "formatted")
        add(self.full_name, "full")
        if given_names and self.given and self.family:
            add(self.given, "given")
        for nickname in self.nicknames:
            add(nickname, "nickname")
        if not (self.given or self.family) and (not self.formatted or self.formatted == self.organization):
            add(self.organization, "organization")
        return out


@dataclass
class ParseResult:
    cards: list[Card] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped_warnings: int = 0

    def warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)
        else:
            self.dropped_warnings += 1

    def extend(self, other: ParseResult) -> None:
        self.cards += other.cards
        for message in other.warnings:
            self.warn(message)
        self.dropped_warnings += other.dropped_warnings

    def all_warnings(self) -> list[str]:
        more = [f"... and {self.dropped_warnings} more warnings"] if self.dropped_warnings else []
        return self.warnings + more


# --------------------------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class _Property:
    name: str  # upper case, group removed
    params: dict[str, list[str]]  # upper-case keys; bare 2.1 parameters are under TYPE/ENCODING/CHARSET
    value: str  # raw, still escaped
    line: int


_BARE_ENCODINGS = {"QUOTED-PRINTABLE", "BASE64", "8BIT", "7BIT", "B"}


def _split_unquoted(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _parse_params(raw: list[str]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for item in raw:
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().upper()
        if not eq:  # vCard 2.1 bare parameter: ";QUOTED-PRINTABLE", ";HOME"
            key, value = ("ENCODING", key) if key in _BARE_ENCODINGS else ("TYPE", key)
        values = [v.strip().strip('"') for v in _split_unquoted(value, ",")]
        params.setdefault(key, []).extend(values)
    return params


def _is_quoted_printable(params: dict[str, list[str]]) -> bool:
    return any(v.upper() == "QUOTED-PRINTABLE" for v in params.get("ENCODING", ()))


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Unfold: (first physical line number, logical line). Quoted-printable soft breaks are joined later."""
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if raw[:1] in (" ", "\t") and current:
            current.append(raw[1:])
            continue
        if current:
            yield start, "".join(current)
        current, start = [raw], number
    if current:
        yield start, "".join(current)


def _properties(text: str, result: ParseResult, source: str) -> Iterator[_Property | None]:
    """Properties in order; None for a line that is not a property (already reported)."""
    lines = iter(_logical_lines(text))
    in_base64 = False  # vCard 2.1 base64 data (a photo) may go on in unfolded lines until an empty line
    for number, line in lines:
        if not line.strip():
            in_base64 = False
            continue
        head_and_value = _split_unquoted(line, ":")
        if len(head_and_value) < 2:
            if not (in_base64 and _BASE64_LINE.match(line.strip())):
                result.warn(f"{source}:{number}: not a vCard property, ignored: {line[:60]!r}")
            yield None
            continue
        head, value = head_and_value[0], ":".join(head_and_value[1:])
        head_parts = _split_unquoted(head, ";")
        name = head_parts[0].strip().upper().rsplit(".", 1)[-1]
        params = _parse_params(head_parts[1:])
        in_base64 = any(v.upper() in ("BASE64", "B") for v in params.get("ENCODING", ()))
        if _is_quoted_printable(params):
            while value.endswith("="):  # soft line break: the value goes on in the next physical line
                nxt = next(lines, None)
                if nxt is None:
                    break
                value = value[:-1] + nxt[1]
        yield _Property(name, params, value, number)


# --------------------------------------------------------------------------------------------- values


def _decode_value(prop: _Property, result: ParseResult, source: str) -> str:
    if not _is_quoted_printable(prop.params):
        return prop.value
    charset = (prop.params.get("CHARSET") or ["utf-8"])[0]
    raw = quopri.decodestring(prop.value.encode("latin-1", errors="replace"))
    try:
        return raw.decode(charset)
    except LookupError:
        result.warn(f"{source}:{prop.line}: unknown charset {charset!r}; read as UTF-8")
    except UnicodeDecodeError:
        result.warn(f"{source}:{prop.line}: {prop.name} is not valid {charset}; undecodable bytes replaced")
    return raw.decode("utf-8", errors="replace")


def _split_escaped(value: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            current.append(value[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


_ESCAPES = {"n": " ", "N": " ", ",": ",", ";": ";", "\\": "\\", ":": ":"}


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            out.append(_ESCAPES.get(value[i + 1], value[i + 1]))
            i += 2
            continue
        out.append(ch)
        i += 1
    return " ".join("".join(out).split())


def _text(value: str) -> str | None:
    text = _unescape(value)
    return text or None


# --------------------------------------------------------------------------------------------- cards


@dataclass
class _Draft:
    line: int
    fn: str | None = None
    n: list[str | None] = field(default_factory=list)
    nicknames: list[str] = field(default_factory=list)
    org: str | None = None
    group: bool = False

    def card(self, source: str) -> Card | None:
        n = (self.n + [None] * 5)[:5]
        card = Card(self.fn, n[0], n[1], n[2], n[3], n[4], tuple(self.nicknames), self.org, f"{source}:{self.line}")
        return card if card.names() else None


def parse_vcards(text: str, source: str = "<vcard>") -> ParseResult:
    """Every card in ``text`` (one or many ``BEGIN:VCARD`` ... ``END:VCARD``), with warnings."""
    result = ParseResult()
    draft: _Draft | None = None
    over_cap = 0

    def finish(d: _Draft) -> None:
        nonlocal over_cap
        if d.group:
            return
        card = d.card(source)
        if card is None:
            result.warn(f"{source}:{d.line}: card without a name (no FN, N, NICKNAME or ORG), skipped")
        elif len(result.cards) < MAX_CARDS:
            result.cards.append(card)
        else:
            over_cap += 1

    for prop in _properties(text, result, source):
        if prop is None:
            continue
        if prop.name == "BEGIN" and prop.value.strip().upper() == "VCARD":
            if draft is not None:
                result.warn(f"{source}:{draft.line}: card has no END:VCARD before the next BEGIN:VCARD")
                finish(draft)
            draft = _Draft(prop.line)
            continue
        if prop.name == "END" and prop.value.strip().upper() == "VCARD":
            if draft is None:
                result.warn(f"{source}:{prop.line}: END:VCARD without BEGIN:VCARD, ignored")
            else:
                finish(draft)
            draft = None
            continue
        if draft is None:
            result.warn(f"{source}:{prop.line}: {prop.name} outside a card, ignored")
            continue
        value = _decode_value(prop, result, source)
        if prop.name == "FN":
            draft.fn = _text(value) or draft.fn
        elif prop.name == "N":
            draft.n = [_text(part) for part in _split_escaped(value, ";")]
        elif prop.name == "NICKNAME":
            draft.nicknames += [t for part in _split_escaped(value, ",") if (t := _text(part))]
        elif prop.name == "ORG":
            draft.org = _text(_split_escaped(value, ";")[0])
        elif prop.name in ("KIND", "X-ADDRESSBOOKSERVER-KIND") and value.strip().lower() == "group":
            draft.group = True
    if draft is not None:
        result.warn(f"{source}:{draft.line}: the last card has no END:VCARD; read up to the end of the input")
        finish(draft)
    if over_cap:
        result.warn(f"{source}: more than {MAX_CARDS} cards; {over_cap} left out")
    return result


def decode_bytes(data: bytes, source: str, result: ParseResult) -> str:
    """vCard bytes as text: UTF-8 (a byte-order mark is dropped), else Windows-1252 with a warning."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        result.warn(f"{source}: not UTF-8; read as Windows-1252")
        return data.decode("cp1252", errors="replace")


def _vcard_files(path: Path) -> Iterable[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".vcf", ".vcard"))
    return [path]


def read_vcard_paths(paths: Iterable[Path]) -> tuple[ParseResult, list[str]]:
    """Read vCard files and directories (``*.vcf``, ``*.vcard`` inside). Returns the result and the paths
    that could not be read at all (missing, unreadable, too large): the caller decides what that means."""
    result = ParseResult()
    failed: list[str] = []
    for path in paths:
        if not path.exists():
            failed.append(f"{path}: no such file or directory")
            continue
        for file in _vcard_files(path):
            try:
                size = file.stat().st_size
                if size > MAX_VCARD_BYTES:
                    failed.append(f"{file}: {size} bytes is more than {MAX_VCARD_BYTES}; not read")
                    continue
                data = file.read_bytes()
            except OSError as exc:
                failed.append(f"{file}: cannot read: {exc.strerror or exc}")
                continue
            part = ParseResult()
            part.extend(parse_vcards(decode_bytes(data, str(file), part), str(file)))
            result.extend(part)
    return result, failed

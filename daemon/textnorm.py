"""Text normalisation: any text to the recogniser's character set.

One function, :func:`normalize`, is applied to training sentences, to the user's bias list (contact and
appliance names) and to reference transcripts before scoring, so that all three agree on spelling. Its
output holds only characters of :data:`ALPHABET`, single spaces between words and no space at either end.
It is deterministic and idempotent: ``normalize(normalize(x)) == normalize(x)``.

Choices made here (documented because a reference transcript must follow them too):

* Letters are lowercased and stripped of diacritics (``é`` -> ``e``); letters that do not decompose are
  mapped by hand (``ø`` -> ``o``, ``ł`` -> ``l``, ``ß`` -> ``ss``, ``æ`` -> ``ae``, ``œ`` -> ``oe``,
  ``đ`` -> ``d``, ``ı`` -> ``i``, ``þ`` -> ``th``). Cyrillic and Greek are transliterated with a small
  table; other scripts (CJK, Arabic, ...) are dropped.
* Cardinals are read without "and": ``121`` -> ``one hundred twenty one``. Numbers with a leading zero
  (``007``) or more than 15 digits are read digit by digit. Decimals read each digit after the point:
  ``2.50`` -> ``two point five zero``. ``1,000`` -> ``one thousand``. ``-5`` -> ``minus five``.
* Times: ``7:30`` -> ``seven thirty``, ``7:05`` -> ``seven oh five``, ``7:00`` -> ``seven o'clock``;
  with a meridiem the letters are spoken: ``7:00 am`` and ``7am`` -> ``seven a m``, ``7:30 p.m.`` ->
  ``seven thirty p m`` (and ``7.30pm`` is a time too). The words "am"/"pm" are only touched after a number.
  24-hour times keep their hour: ``19:45`` -> ``nineteen forty five``. Years are plain cardinals
  (``2024`` -> ``two thousand twenty four``); without a colon or meridiem ``7.30`` is a decimal.
* Ordinals: ``3rd`` -> ``third``, ``21st`` -> ``twenty first``.
* ``½`` and ``1/2`` -> ``one half``, ``¾`` -> ``three quarters`` (halves and quarters only).
* ``50%`` -> ``fifty percent``; ``21°`` -> ``twenty one degrees`` (``°C``/``°F`` add ``celsius``/
  ``fahrenheit``); ``$5`` -> ``five dollars``, ``£3.50`` -> ``three pounds fifty``; ``5 min`` ->
  ``five minutes`` (also ``sec``, ``hr``), singular for one.
* Titles and abbreviations: ``dr`` -> ``doctor``, ``mr`` -> ``mister``, ``mrs`` -> ``missus``, ``ms`` ->
  ``miz``, ``jr``/``sr`` -> ``junior``/``senior``, ``vs`` -> ``versus``, ``etc`` -> ``et cetera``, with or
  without a full stop. ``st`` is ``saint`` when a word follows it and ``street`` otherwise. Some only with a
  full stop, because without it they are ordinary words: ``Prof.``, ``Rev.``, ``Fr.``, ``Capt.``, ``Lt.``,
  ``Sgt.``, ``Gen.``, ``Col.``, ``Mt.``, ``Ave.``, ``Rd.``, ``Apt.``, and ``No.`` before a number.
* ``&`` -> ``and``, ``@`` -> ``at``, ``+`` -> ``plus``, ``#`` before a number -> ``number``.
* Apostrophes: curly and other look-alikes become ``'``; an apostrophe inside a word stays (``Ellie's`` ->
  ``ellie's``, ``don't``), one at either end of a word is dropped (``'hello'`` -> ``hello``,
  ``the Joneses'`` -> ``the joneses``).
* Hyphens, dashes, slashes, underscores and full stops separate words (``U.S.A.`` -> ``u s a``,
  ``twenty-one`` -> ``twenty one``); all other punctuation is removed.
* Letters and digits written together are split: ``mp3`` -> ``mp three``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["ALPHABET", "is_normalized", "normalize", "spoken_digits", "spoken_number", "spoken_ordinal"]

#: The recogniser's output characters: space, the 26 lowercase letters and the apostrophe.
ALPHABET = " abcdefghijklmnopqrstuvwxyz'"

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_MAX_CARDINAL = 10**15 - 1

_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest or not words:
        words.append(_ONES[rest])
    return words


def spoken_number(n: int) -> str:
    """Read an integer in words, American style without "and": ``121`` -> ``one hundred twenty one``.

    Negative numbers start with ``minus``. Magnitudes of 10**15 and above are read digit by digit.
    """
    if n < 0:
        return "minus " + spoken_number(-n)
    if n > _MAX_CARDINAL:
        return spoken_digits(str(n))
    if n < 1000:
        return " ".join(_below_thousand(n))
    words: list[str] = []
    rest = n
    for scale, name in _SCALES:
        count, rest = divmod(rest, scale)
        if count:
            words += [*_below_thousand(count), name]
    if rest:
        words += _below_thousand(rest)
    return " ".join(words)


def spoken_ordinal(n: int) -> str:
    """Read an ordinal in words: ``3`` -> ``third``, ``21`` -> ``twenty first``, ``100`` -> ``one hundredth``.

    Magnitudes of 10**15 and above are read digit by digit with ``th`` added to the last digit's word.
    """
    words = spoken_number(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def spoken_digits(digits: str) -> str:
    """Read a string of ASCII digits one by one: ``"007"`` -> ``zero zero seven``."""
    return " ".join(_ONES[int(d)] for d in digits)


def _integer(digits: str) -> str:
    """Read a run of digits: as a cardinal, or digit by digit with a leading zero or when very long."""
    if len(digits) > 1 and digits.startswith("0"):
        return spoken_digits(digits)
    if len(digits) > 15:
        return spoken_digits(digits)
    return spoken_number(int(digits))


def _decimal(whole: str, fraction: str) -> str:
    return _integer(whole) + " point " + spoken_digits(fraction)


def _number(text: str) -> str:
    """Read ``123``, ``1,234`` or ``2.5``."""
    text = text.replace(",", "")
    whole, _, fraction = text.partition(".")
    if fraction:
        return _decimal(whole, fraction)
    return _integer(whole)


# ---------------------------------------------------------------------------------------------------------
# Character folding
# ---------------------------------------------------------------------------------------------------------

# Letters that NFKD does not decompose into an ASCII letter plus marks (the text is lowercased first).
_LETTER_MAP = {
    "ø": "o", "ł": "l", "ß": "ss", "æ": "ae", "œ": "oe", "đ": "d", "ı": "i", "ð": "d", "þ": "th", "ħ": "h",
    "ŋ": "ng", "ĸ": "k", "ſ": "s", "ƒ": "f", "ɛ": "e", "ɔ": "o", "ə": "e",
}  # fmt: skip

# Small, lossy transliteration of Cyrillic and Greek.
_CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "yo", "ж": "zh", "з": "z", "и": "i",
    "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "",
    "э": "e", "ю": "yu", "я": "ya", "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "u", "ј": "j", "љ": "lj",
    "њ": "nj", "ћ": "c", "ђ": "dj", "џ": "dz",
}  # fmt: skip
_GREEK = {
    "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th", "ι": "i", "κ": "k",
    "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p", "ρ": "r", "σ": "s", "ς": "s", "τ": "t",
    "υ": "y", "φ": "f", "χ": "ch", "ψ": "ps", "ω": "o",
}  # fmt: skip

# Greek vowel and consonant pairs read as one sound; replaced before the letter table.
_GREEK_PAIRS = (
    ("ου", "ou"), ("αυ", "av"), ("ευ", "ev"), ("γγ", "ng"), ("γκ", "gk"), ("μπ", "mp"), ("ντ", "nt"),
)  # fmt: skip

_APOSTROPHES = "\u2019\u2018\u201b\u02bc\u02b9\u02bb\u2032\u0060\u00b4\uff07"
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"

_FOLD_TABLE: dict[int, str] = {ord(k): v for k, v in {**_LETTER_MAP, **_CYRILLIC, **_GREEK}.items()}
_FOLD_TABLE.update({ord(c): "'" for c in _APOSTROPHES})
_FOLD_TABLE.update({ord(c): "-" for c in _DASHES})
_FOLD_TABLE[ord("\u2044")] = "/"  # fraction slash, produced by NFKD from "½"


def _fold(text: str) -> str:
    """Lowercase, NFKD, drop combining marks, then map the remaining non-ASCII letters and look-alikes."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    if any("\u0370" <= c <= "\u03ff" for c in stripped):
        for pair, latin in _GREEK_PAIRS:
            stripped = stripped.replace(pair, latin)
    return stripped.translate(_FOLD_TABLE)


# ---------------------------------------------------------------------------------------------------------
# Patterns that need the original punctuation: applied in order, before punctuation is removed
# ---------------------------------------------------------------------------------------------------------

_Rule = tuple["re.Pattern[str]", Callable[["re.Match[str]"], str]]

_MERIDIEM = r"(?P<mer>[ap])\.?\s?m\b\.?"
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"

_DOTTED_ABBREVIATIONS = {
    "prof": "professor",
    "rev": "reverend",
    "fr": "father",
    "capt": "captain",
    "lt": "lieutenant",
    "sgt": "sergeant",
    "gen": "general",
    "col": "colonel",
    "mt": "mount",
    "ave": "avenue",
    "rd": "road",
    "apt": "apartment",
    "approx": "approximately",
}

_CURRENCIES = {"$": ("dollar", "dollars"), "£": ("pound", "pounds"), "€": ("euro", "euros")}

_UNITS = {
    "min": ("minute", "minutes"),
    "mins": ("minute", "minutes"),
    "sec": ("second", "seconds"),
    "secs": ("second", "seconds"),
    "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"),
}


def _pad(words: str) -> str:
    return f" {words} "


def _time_words(hour: int, minute: int, meridiem: str | None) -> str:
    words = [spoken_number(hour)]
    if minute == 0:
        if meridiem is None:
            words.append("o'clock")
    elif minute < 10:
        words += ["oh", spoken_number(minute)]
    else:
        words.append(spoken_number(minute))
    if meridiem is not None:
        words += [meridiem, "m"]
    return " ".join(words)


def _sub_clock(m: re.Match[str]) -> str:
    hour, minute = int(m["h"]), int(m["m"])
    meridiem = m["mer"] or None
    if hour > 23 or minute > 59:
        return _pad(f"{_integer(m['h'])} {_integer(m['m'])}") + (_pad(f"{meridiem} m") if meridiem else "")
    return _pad(_time_words(hour, minute, meridiem))


def _sub_hour_meridiem(m: re.Match[str]) -> str:
    return _pad(f"{_integer(m['h'])} {m['mer']} m")


def _sub_currency(m: re.Match[str]) -> str:
    singular, plural = _CURRENCIES[m["sym"]]
    whole = m["whole"].replace(",", "")
    cents = m["cents"]
    words = f"{_integer(whole)} {singular if whole == '1' else plural}"
    if cents and int(cents):
        words += " " + spoken_number(int(cents))
    return _pad(words)


def _sub_percent(m: re.Match[str]) -> str:
    return _pad(_number(m["n"]) + " percent")


def _sub_degrees(m: re.Match[str]) -> str:
    unit = "degree" if m["n"] == "1" else "degrees"
    scale = {"c": " celsius", "f": " fahrenheit"}.get(m["scale"] or "", "")
    return _pad(f"{_number(m['n'])} {unit}{scale}")


def _sub_ordinal(m: re.Match[str]) -> str:
    return _pad(spoken_ordinal(int(m["n"])))


def _sub_unit(m: re.Match[str]) -> str:
    singular, plural = _UNITS[m["unit"]]
    return _pad(f"{_number(m['n'])} {singular if m['n'] == '1' else plural}")


def _sub_number(m: re.Match[str]) -> str:
    return _pad(_number(m[0]))


def _sub_fraction(m: re.Match[str]) -> str:
    count = int(m["n"])
    if m["d"] == "2":
        return _pad(f"{spoken_number(count)} {'half' if count == 1 else 'halves'}")
    return _pad(f"{spoken_number(count)} {'quarter' if count == 1 else 'quarters'}")


def _sub_dotted(m: re.Match[str]) -> str:
    return _pad(_DOTTED_ABBREVIATIONS[m["abbr"].lower()])


# The text is already lowercase when these run.
_RULES: tuple[_Rule, ...] = (
    # A minus sign before a number at the start of a word (a hyphen between digits stays a separator).
    (re.compile(r"(?:(?<=[\s(])|^)-(?=\d)"), lambda m: " minus "),
    (
        re.compile(r"(?P<sym>[$£€])\s?(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<cents>\d{2}))?(?!\d)"),
        _sub_currency,
    ),
    (re.compile(rf"(?<![\d.:])(?P<h>\d{{1,2}})[:.](?P<m>\d{{2}})\s?{_MERIDIEM}"), _sub_clock),
    (re.compile(r"(?<![\d.:])(?P<h>\d{1,2}):(?P<m>\d{2})(?![\d:])(?P<mer>)"), _sub_clock),
    (re.compile(rf"(?<![\d.:])(?P<h>\d{{1,2}})\s?{_MERIDIEM}"), _sub_hour_meridiem),
    (re.compile(r"(?<![\d/.])(?P<n>\d)/(?P<d>[24])(?![\d/])"), _sub_fraction),
    (re.compile(rf"(?P<n>{_NUM})\s?%"), _sub_percent),
    (re.compile(rf"(?P<n>{_NUM})\s?°\s?(?P<scale>[cf](?![a-z]))?"), _sub_degrees),
    (re.compile(r"(?P<n>\d+)(?:st|nd|rd|th)\b"), _sub_ordinal),
    (re.compile(rf"(?P<n>{_NUM})\s?(?P<unit>mins?|secs?|hrs?)\b\.?"), _sub_unit),
    (re.compile(r"#\s?(?=\d)"), lambda m: " number "),
    (re.compile(r"\bno\.\s?(?=\d)"), lambda m: " number "),
    (re.compile(_NUM), _sub_number),
    (re.compile(r"\b(?P<abbr>" + "|".join(_DOTTED_ABBREVIATIONS) + r")\."), _sub_dotted),
)

_SYMBOLS = {"&": " and ", "@": " at ", "+": " plus ", "%": " percent "}
_SYMBOL_RE = re.compile("[" + re.escape("".join(_SYMBOLS)) + "]")

# Applied word by word after punctuation is gone. None of the outputs is itself a key, which keeps
# normalize idempotent.
_WORD_MAP = {
    "dr": "doctor",
    "mr": "mister",
    "mrs": "missus",
    "ms": "miz",
    "jr": "junior",
    "sr": "senior",
    "vs": "versus",
    "etc": "et cetera",
}

_NOT_ALPHABET_RE = re.compile(r"[^a-z']+")
_APOSTROPHE_RUN_RE = re.compile(r"'{2,}")


def _words(text: str) -> list[str]:
    words: list[str] = []
    for raw in _NOT_ALPHABET_RE.sub(" ", text).split():
        word = _APOSTROPHE_RUN_RE.sub("'", raw).strip("'")
        if word:
            words.append(word)
    out: list[str] = []
    for i, word in enumerate(words):
        if word == "st":
            out.append("saint" if i + 1 < len(words) else "street")
        else:
            out.extend(_WORD_MAP.get(word, word).split())
    return out


def normalize(text: str) -> str:
    """Normalise ``text`` to words over :data:`ALPHABET` (see the module docstring for every rule)."""
    text = _fold(text)
    for pattern, replace in _RULES:
        text = pattern.sub(replace, text)
    text = _SYMBOL_RE.sub(lambda m: _SYMBOLS[m[0]], text)
    return " ".join(_words(text))


def is_normalized(text: str) -> bool:
    """True when ``text`` is already in normal form (the output of :func:`normalize`)."""
    return normalize(text) == text

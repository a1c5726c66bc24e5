from __future__ import annotations

import pytest

from daemon.textnorm import ALPHABET, is_normalized, normalize, spoken_digits, spoken_number, spoken_ordinal
from training.text_corpus import generate


def test_alphabet_is_space_letters_apostrophe() -> None:
    assert ALPHABET == " abcdefghijklmnopqrstuvwxyz'"
    assert len(set(ALPHABET)) == 28


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (21, "twenty one"),
        (40, "forty"),
        (100, "one hundred"),
        (121, "one hundred twenty one"),
        (1000, "one thousand"),
        (1005, "one thousand five"),
        (2024, "two thousand twenty four"),
        (1_000_000, "one million"),
        (3_400_019, "three million four hundred thousand nineteen"),
        (-5, "minus five"),
        (10**15, "one zero zero zero zero zero zero zero zero zero zero zero zero zero zero zero"),
    ],
)
def test_spoken_number(n: int, words: str) -> None:
    assert spoken_number(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [(1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (9, "ninth"), (12, "twelfth"),
     (20, "twentieth"), (21, "twenty first"), (100, "one hundredth"), (103, "one hundred third")],
)  # fmt: skip
def test_spoken_ordinal(n: int, words: str) -> None:
    assert spoken_ordinal(n) == words


def test_spoken_digits() -> None:
    assert spoken_digits("0070") == "zero zero seven zero"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # case, spacing
        ("  Turn ON   the Light  ", "turn on the light"),
        ("", ""),
        ("?!", ""),
        # diacritics and letters without a decomposition
        ("Siobhán Ó Briain", "siobhan o briain"),
        ("Jürgen Müller", "jurgen muller"),
        ("Søren Ørsted", "soren orsted"),
        ("Łukasz Wałęsa", "lukasz walesa"),
        ("Straße", "strasse"),
        ("Æsa Cœur", "aesa coeur"),
        ("Đorđe", "dorde"),
        ("Işıl", "isil"),
        ("İstanbul", "istanbul"),
        ("Þóra", "thora"),
        ("Наталья Смирнова", "natalya smirnova"),
        ("Ευάγγελος", "evangelos"),
        ("ﬁnal", "final"),
        ("中文 name", "name"),
        # numbers
        ("21", "twenty one"),
        ("100", "one hundred"),
        ("1,250", "one thousand two hundred fifty"),
        ("2.5", "two point five"),
        ("0.75", "zero point seven five"),
        ("007", "zero zero seven"),
        ("-5", "minus five"),
        ("set it to -3 degrees", "set it to minus three degrees"),
        ("2024-01-05", "two thousand twenty four zero one zero five"),
        ("mp3", "mp three"),
        ("50%", "fifty percent"),
        ("2.5 %", "two point five percent"),
        ("21°", "twenty one degrees"),
        ("1°", "one degree"),
        ("21.5°C", "twenty one point five degrees celsius"),
        ("68°F", "sixty eight degrees fahrenheit"),
        ("$5", "five dollars"),
        ("$1.00", "one dollar"),
        ("£3.50", "three pounds fifty"),
        ("€20", "twenty euros"),
        ("½ cup", "one half cup"),
        ("3/4", "three quarters"),
        ("#2", "number two"),
        ("No. 5", "number five"),
        ("no. thanks", "no thanks"),
        ("5 mins", "five minutes"),
        ("1 min", "one minute"),
        ("30 secs", "thirty seconds"),
        ("2 hrs", "two hours"),
        # times
        ("7:30", "seven thirty"),
        ("7:05", "seven oh five"),
        ("7:00", "seven o'clock"),
        ("7:00 am", "seven a m"),
        ("7am", "seven a m"),
        ("7 a.m.", "seven a m"),
        ("7:30pm", "seven thirty p m"),
        ("7.30 PM", "seven thirty p m"),
        ("19:45", "nineteen forty five"),
        ("12:30:45", "twelve thirty forty five"),
        ("i am 5 am people", "i am five a m people"),
        ("5 amps", "five amps"),
        # ordinals
        ("3rd", "third"),
        ("the 21st of June", "the twenty first of june"),
        ("22nd", "twenty second"),
        ("11th", "eleventh"),
        ("101st", "one hundred first"),
        # titles and abbreviations
        ("Dr. Okafor", "doctor okafor"),
        ("dr okafor", "doctor okafor"),
        ("Mr. Smith", "mister smith"),
        ("Mrs Smith", "missus smith"),
        ("Ms. Jones", "miz jones"),
        ("St. Patrick", "saint patrick"),
        ("Main St.", "main street"),
        ("Prof. Xavier", "professor xavier"),
        ("Fr. Ted", "father ted"),
        ("Rev. Green", "reverend green"),
        ("Mt. Everest", "mount everest"),
        ("Sammy Davis Jr.", "sammy davis junior"),
        ("cats vs. dogs", "cats versus dogs"),
        ("pens, paper etc.", "pens paper et cetera"),
        # symbols
        ("Tom & Jerry", "tom and jerry"),
        ("me@home", "me at home"),
        ("C++", "c plus plus"),
        # apostrophes
        ("Ellie's lamp", "ellie's lamp"),
        ("Ellie’s lamp", "ellie's lamp"),
        ("don‘t", "don't"),
        ("the Joneses' car", "the joneses car"),
        ("'quoted'", "quoted"),
        ("rock 'n' roll", "rock n roll"),
        ("O'Brien", "o'brien"),
        ("it''s", "it's"),
        # hyphens, dashes and other punctuation
        ("twenty-one", "twenty one"),
        ("on/off", "on off"),
        ("U.S.A.", "u s a"),
        ("well — maybe", "well maybe"),
        ("snake_case", "snake case"),
        ('He said: "hi!" (twice)', "he said hi twice"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected
    assert normalize(expected) == expected


IDEMPOTENCE_SAMPLES = [
    "Call Dr. Siobhán O’Keeffe at 7:30pm about the 3rd invoice ($12.50, 15% off)!",
    "Set the living-room lamp to 45% & the heating to 21.5°C at 6 a.m. on Fri.",
    "St. John's Rd., Apt. 4 — No. 12",
    "1/2 3/4 ½ ¼ 1,000,000 0.001 -7 #3 24/7 7.30pm 07:05",
    "''' '' ' - -- _ . .. ... st",
    "Ms MS mr MR. dr. DR jr. etc vs st St. ST",
    "x-ray 4k 2x mp4 b12 v2.0 1st2nd 3rd.",
]


@pytest.mark.parametrize("text", IDEMPOTENCE_SAMPLES)
def test_normalize_is_idempotent_and_stays_in_alphabet(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert is_normalized(once)
    assert set(once) <= set(ALPHABET)
    assert "  " not in once and once == once.strip()


def test_is_normalized_rejects_raw_text() -> None:
    assert not is_normalized("Call Mum")
    assert is_normalized("call mum")


def test_generated_corpus_is_normalized() -> None:
    corpus = generate(3000, "train", seed=11) + generate(3000, "test", seed=11)
    for utterance in corpus:
        assert set(utterance.text) <= set(ALPHABET), utterance.text
        assert normalize(utterance.text) == utterance.text, utterance.text
        for entity in utterance.entities:
            assert normalize(entity.text) == entity.text, entity.text

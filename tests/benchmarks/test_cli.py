"""The benchmarks' shared list arguments: bad lists are refused by argparse with the reason."""

import argparse
import re

import pytest

from bench.cli import name_list, number_list


def test_number_list_parses_and_validates() -> None:
    parse = number_list(float, 0, "numbers >= 0")
    assert parse("1,1.5, 2") == [1.0, 1.5, 2.0]
    for bad in ("", "1,x", "-1", ","):
        with pytest.raises(argparse.ArgumentTypeError, match="numbers >= 0"):
            parse(bad)
    assert number_list(int, 1, "positive whole numbers")("2,4") == [2, 4]
    with pytest.raises(argparse.ArgumentTypeError):
        number_list(int, 1, "positive whole numbers")("1.5")


def test_name_list_checks_choices() -> None:
    assert name_list()(" kokoro , espeak,") == ["kokoro", "espeak"]
    assert name_list()("") == []
    assert name_list(("harkd", "whisper"))("whisper,harkd") == ["whisper", "harkd"]
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape("unknown vosk (choose from harkd, whisper)")):
        name_list(("harkd", "whisper"))("harkd,vosk")


def test_benchmarks_refuse_bad_lists_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import bias, recognizer

    with pytest.raises(SystemExit) as exc:
        bias.main(["--boost", "1,big"])
    assert exc.value.code == 2
    assert "--boost: wants numbers >= 0, got '1,big'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recognizer.main(["--engines", "harkd,vosk"])
    assert "--engines: unknown vosk" in capsys.readouterr().err

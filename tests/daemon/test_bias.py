"""Context biasing: the bias graph against a brute-force reference, and inside the real beam search."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from competing_backend import CompetingBackend

from daemon import cli
from daemon.bias import (
    DEFAULT_HOLD,
    BiasFileError,
    BiasGraph,
    BiasGraphCache,
    load_bias_file,
    parse_bias_document,
    save_bias_file,
)
from daemon.frontend import Frontend
from daemon.messages import BiasEntry, BiasSet, PayloadError
from daemon.recognizer import DecodeConfig, Hypothesis, Recognizer, TransducerBackend
from daemon.textnorm import ALPHABET
from daemon.tokens import TokenTable

TOKENS = TokenTable.from_alphabet(ALPHABET)


def graph(contacts: Sequence[str] = (), appliances: Sequence[str] = (), score: float = 1.0,
          possessives: bool = False, hold: float = 1.0) -> BiasGraph:
    """With ``hold`` 1 (every token's credit given at once) the arithmetic below is easy to follow."""
    return BiasGraph.from_document(BiasSet.of(contacts, appliances), TOKENS, score, possessives=possessives,
                                   hold=hold)


def reference_total(phrases: list[str], text: str, boost: float) -> float:
    """For each word start, the credit of the longest phrase that occurs there and ends at a word boundary."""
    total = 0.0
    for start in range(len(text)):
        if text[start] == " " or (start > 0 and text[start - 1] != " "):
            continue
        best = 0
        for phrase in phrases:
            end = start + len(phrase)
            if text.startswith(phrase, start) and (end == len(text) or text[end] == " "):
                best = max(best, len(phrase) + 1)  # the name's tokens and the boundary
        total += best * boost
    return total


def running_totals(g: BiasGraph, text: str) -> list[float]:
    state, total, out = g.initial_state(), 0.0, []
    for token in TOKENS.encode(text):
        state, bonus = state.advance(token)
        total += bonus
        out.append(total)
    return out


# ------------------------------------------------------------------------------------------ the graph


@pytest.mark.parametrize("hold", [1.0, 0.5, 0.0])
def test_matches_the_brute_force_reference_on_random_texts(hold: float) -> None:
    rng = random.Random(7)
    words = ["a", "ab", "ba", "b", "abb", "aab"]
    for _ in range(200):
        phrases = sorted({" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(rng.randint(1, 6))})
        g = BiasGraph.from_entries([(p, "contact", 1.0) for p in phrases], TOKENS, possessives=False, hold=hold)
        for _ in range(10):
            text = "".join(rng.choices("ab ", weights=[4, 4, 3], k=rng.randint(0, 14)))
            assert g.score_text(text) == pytest.approx(reference_total(phrases, text, 1.0)), (phrases, text)
            # provisional credit never goes negative: held credit is only what was granted
            assert min(running_totals(g, text), default=0.0) >= -1e-9


def test_a_name_must_start_and_end_at_word_boundaries() -> None:
    g = graph(["ana"])
    assert g.score_text("ana") == 4.0  # three letters and the boundary (the end of the hypothesis)
    assert g.score_text("call ana now") == 4.0
    assert g.score_text("banana") == 0.0
    assert g.score_text("call anabel") == 0.0
    assert g.score_text("call ana ana") == 8.0


def test_partial_match_credit_is_withdrawn() -> None:
    g = graph(["jonathan"])
    totals = running_totals(g, "call jon now")
    assert totals[len("call jo") - 1] == 0.0  # a name's first two tokens earn nothing while matching
    assert totals[len("call jon") - 1] == 1.0  # "n" held provisionally
    assert totals[len("call jon ") - 1] == 0.0  # the space leaves the partial match: all withdrawn
    assert totals[-1] == 0.0
    state = g.initial_state()
    for token in TOKENS.encode("call jonat"):
        state, _ = state.advance(token)
    assert state.final_bonus() == -3.0  # ending inside the name withdraws what it held ("nat")
    assert g.score_text("call jonat") == 0.0


def test_token_bonuses_put_the_credit_on_the_name() -> None:
    g = graph(["ana"])
    text = "call ana now"
    bonuses = g.token_bonuses(TOKENS.encode(text))
    assert len(bonuses) == len(text)
    assert [i for i, b in enumerate(bonuses) if b] == [7, 8]  # the end of "ana" and the space after it
    assert sum(bonuses) == g.score_text(text) == 4.0
    assert bonuses[8] == 3.0  # the first two tokens are paid on completion
    ends_inside = graph(["anabel"]).token_bonuses(TOKENS.encode("call anab"))
    assert sum(ends_inside) == 0.0 and ends_inside[-1] == -1.0  # +1 for "a", +1 for "b", -3 at the end
    assert g.token_bonuses([]) == ()


def test_continuations_are_the_tokens_that_extend_a_partial_match() -> None:
    g = graph(["ana", "anna", "bob"])
    state = g.initial_state()
    assert state.continuations == ()  # at a word start nothing is in progress
    for token in TOKENS.encode("an"):
        state, _ = state.advance(token)
    assert sorted(TOKENS.tokens[t] for t in state.continuations) == ["a", "n"]
    for token in TOKENS.encode("a"):
        state, _ = state.advance(token)
    assert [TOKENS.tokens[t] for t in state.continuations] == [" "]


def test_a_failed_match_can_restart_a_new_one_at_the_next_word() -> None:
    g = graph(["ana lucia", "lucia okafor"])
    assert g.score_text("ana lucia okafor") == pytest.approx(10.0 + 13.0)  # both occurrences complete
    assert g.score_text("ana lucky lucia okafor") == pytest.approx(13.0)
    assert g.score_text("ana lucia okafo") == pytest.approx(10.0)


def test_a_name_that_starts_a_longer_one_is_not_counted_twice() -> None:
    g = graph(["ana", "ana lucia"])
    assert g.score_text("ana") == 4.0
    assert g.score_text("ana lucia") == 10.0
    assert g.score_text("ana luc") == 4.0  # "ana" completed; the unfinished rest is withdrawn


def test_per_entry_boosts() -> None:
    doc = BiasSet((BiasEntry("Bob", 3.0), BiasEntry("Ana")), (BiasEntry("hall lamp", 0.5),))
    g = BiasGraph.from_document(doc, TOKENS, 1.0, possessives=False, hold=1.0)
    assert g.score_text("call bob") == 12.0
    assert g.score_text("call ana") == 4.0
    assert g.score_text("the hall lamp") == 5.0
    # a token shared by two names earns the larger boost while both are possible; a completed name earns
    # its own boost per token
    shared = BiasGraph.from_entries([("ann", "contact", 1.0), ("anna", "contact", 2.0)], TOKENS, possessives=False,
                                    hold=1.0)
    assert running_totals(shared, "ann") == [0.0, 0.0, 2.0]
    assert shared.score_text("ann") == pytest.approx(4.0)
    assert shared.score_text("anna") == pytest.approx(10.0)


def test_hold_gives_part_of_the_credit_while_matching_and_the_rest_on_completion() -> None:
    g = BiasGraph.from_entries([("ana", "contact", 2.0)], TOKENS, possessives=False, hold=0.25)
    assert running_totals(g, "ana ") == [0.0, 0.0, 0.5, 8.0]  # nothing for the first UNHELD_TOKENS
    assert g.score_text("ana") == 8.0 and g.score_text("anat") == 0.0
    with pytest.raises(ValueError, match="hold"):
        BiasGraph((), TOKENS, hold=1.5)


def test_names_are_normalised_like_training_text() -> None:
    g = BiasGraph.from_document(
        BiasSet.of(["Dr. Siobhán O\u2019Kafor", "Zoë"], ["Flat 2 heater", "the Aquarium Pump"]), TOKENS, 1.0
    )
    texts = {p.text for p in g.phrases}
    assert {"doctor siobhan o'kafor", "zoe", "zoe's", "flat two heater", "aquarium pump"} <= texts
    assert g.score_text("call zoe's phone") == pytest.approx(6.0)  # the possessive of a contact
    assert g.score_text("turn on the aquarium pump") == pytest.approx(14.0)
    assert g.score_text("turn on aquarium pump") == pytest.approx(14.0)


def test_entries_the_model_cannot_spell_are_skipped_with_a_reason() -> None:
    g = graph(["東京", "ok", "!!!"])
    assert [p.text for p in g.phrases] == ["ok"]
    assert [name for name, _ in g.skipped] == ["東京", "!!!"]
    small = TokenTable.from_alphabet(" abc")
    g = BiasGraph.from_entries([("abc", "contact", 1.0), ("abd", "contact", 1.0)], small, possessives=False)
    assert [p.text for p in g.phrases] == ["abc"]
    assert "no token for 'd'" in g.skipped[0][1]


def test_duplicates_after_normalisation_keep_the_larger_boost() -> None:
    doc = BiasSet((BiasEntry("Ana", 1.0), BiasEntry("ANA", 2.0), BiasEntry("Ána")), ())
    g = BiasGraph.from_document(doc, TOKENS, 0.5, possessives=False)
    assert [(p.text, p.boost) for p in g.phrases] == [("ana", 2.0)]


def test_an_empty_list_gives_no_bonus() -> None:
    g = BiasGraph.empty(TOKENS)
    assert g.score_text("call siobhan okafor") == 0.0
    assert len(g) == 0


def test_a_thousand_names_build_quickly_and_advance_is_cheap() -> None:
    rng = random.Random(3)
    letters = "abcdefghijklmnopqrstuvwxyz"
    names = [" ".join("".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(2)) for _ in range(1000)]
    started = time.perf_counter()
    g = BiasGraph.from_document(BiasSet.of(names[:800], names[800:]), TOKENS, 1.5)
    build_s = time.perf_counter() - started
    assert build_s < 2.0  # about 0.1 s on this machine
    text = TOKENS.encode("call " + names[5] + " and turn on the " + names[900] + " please")
    state = g.initial_state()
    started = time.perf_counter()
    for _ in range(200):
        state = g.initial_state()
        for token in text:
            state, _ = state.advance(token)
    per_step = (time.perf_counter() - started) / (200 * len(text))
    assert per_step < 20e-6  # about 0.3 µs
    assert g.score_tokens(text) == pytest.approx(1.5 * (len(names[5]) + 1 + len(names[900]) + 1))


def test_graph_cache_builds_once_per_document() -> None:
    cache = BiasGraphCache(TOKENS, 1.0, hold=0.5)
    first = BiasSet.of(["ana"])
    assert cache.graph(first) is cache.graph(BiasSet.of(["ana"]))
    state = cache(first)
    for token in TOKENS.encode("an"):
        state, _ = state.advance(token)
    assert state.advance(TOKENS.encode("a")[0])[1] == 0.5  # the cache's hold
    second = BiasSet.of(["bob"])
    assert cache.graph(second) is not cache.graph(first)


# ------------------------------------------------------------------------------------------ documents


def test_document_round_trip_strings_and_objects() -> None:
    doc = {"contacts": ["Siobhan Okafor", {"name": "Mum", "boost": 3}], "appliances": [{"name": "aquarium pump"}]}
    parsed = BiasSet.from_dict(doc)
    assert parsed == BiasSet((BiasEntry("Siobhan Okafor"), BiasEntry("Mum", 3.0)), (BiasEntry("aquarium pump"),))
    again = BiasSet.from_dict(parsed.to_dict())
    assert again == parsed
    assert parsed.to_dict()["contacts"] == ["Siobhan Okafor", {"name": "Mum", "boost": 3.0}]


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({}, "not valid under any of the given schemas"),
        ({"contacts": "Ana"}, "$.contacts: 'Ana' is not of type 'array'"),
        ({"contacts": [""]}, "$.contacts[0]"),
        ({"contacts": ["   "]}, "$.contacts[0]"),
        ({"contacts": [{"name": "Ana", "boost": -1}]}, "$.contacts[0]"),
        ({"contacts": [{"name": "Ana", "boost": 1e9}]}, "$.contacts[0]"),
        ({"contacts": [{"nom": "Ana"}]}, "$.contacts[0]"),
        ({"contacts": [], "phrases": []}, "'phrases' was unexpected"),
        ({"contacts": [], "schema": "harkd.bias/9"}, "$.schema"),
        ({"contacts": ["x"] * 5001}, "is too long"),
    ],
)
def test_invalid_documents_are_rejected_with_the_reason(document: object, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        BiasSet.from_dict(document)
    assert reason in str(info.value)


def test_load_bias_file_json_and_yaml(tmp_path: Path) -> None:
    json_file = tmp_path / "bias.json"
    json_file.write_text(json.dumps({"version": "7", "contacts": ["Ana"], "appliances": ["fan"]}))
    assert load_bias_file(json_file) == BiasSet.of(["Ana"], ["fan"], version="7")
    yaml_file = tmp_path / "household.yaml"
    yaml_file.write_text("contacts:\n  - Siobhan Okafor\n  - {name: Mum, boost: 3}\nappliances: [aquarium pump]\n")
    assert load_bias_file(yaml_file) == BiasSet((BiasEntry("Siobhan Okafor"), BiasEntry("Mum", 3.0)),
                                                (BiasEntry("aquarium pump"),))
    guessed = tmp_path / "list"
    guessed.write_text("contacts: [Ana]\n")
    assert load_bias_file(guessed) == BiasSet.of(["Ana"])


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("bad.json", "{\"contacts\": [}", "not JSON"),
        ("bad.yaml", "contacts: [Ana\n", "not valid YAML at line"),
        ("empty.yaml", "", "the document is empty"),
        ("list.yaml", "- Ana\n", "not of type 'object'"),
        ("wrong.json", "{\"phrases\": []}", "'phrases' was unexpected"),
        ("latin1.json", b"{\"contacts\": [\"Jos\xe9\"]}", "not UTF-8"),
    ],
)
def test_load_bias_file_says_why_it_refuses(tmp_path: Path, name: str, content: str | bytes, reason: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(BiasFileError) as info:
        load_bias_file(path)
    assert str(path) in str(info.value) and reason in str(info.value)


def test_load_bias_file_missing_and_too_big(tmp_path: Path) -> None:
    with pytest.raises(BiasFileError, match="cannot read the bias list"):
        load_bias_file(tmp_path / "absent.json")
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(9 * 1024 * 1024)
    with pytest.raises(BiasFileError, match="more than a bias list may hold"):
        load_bias_file(big)


def test_save_bias_file_is_atomic_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bias.json"
    doc = BiasSet((BiasEntry("Siobhán", 2.0),), (BiasEntry("fan"),), "v1")
    save_bias_file(path, doc)
    assert load_bias_file(path) == doc
    save_bias_file(path, BiasSet.of(["Ana"]))
    assert load_bias_file(path) == BiasSet.of(["Ana"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["bias.json"]  # no partial files left behind
    assert parse_bias_document(path.read_text(), fmt="json") == BiasSet.of(["Ana"])


# ------------------------------------------------------------------------------------------ beam search


def decode(favoured: str, other: str, margin: float, bias: BiasGraph | None, beam: int = 4) -> list[Hypothesis]:
    backend: TransducerBackend = CompetingBackend(favoured, other, margin)
    recognizer = Recognizer(backend, TOKENS, Frontend(), DecodeConfig(beam=beam, max_symbols=2))
    stream = recognizer.stream(bias=bias.initial_state() if bias else None)
    stream.accept_features(np.zeros((6 * (len(favoured) + 2), 40), dtype=np.float32))
    stream.finalize()
    return stream.nbest()


@pytest.mark.parametrize("hold", [1.0, DEFAULT_HOLD])
def test_biasing_rescues_a_name_the_acoustics_slightly_disfavour(hold: float) -> None:
    plain = decode("call shivon", "call siobhan", 2.0, None)
    assert plain[0].text == "call shivon"
    assert "call siobhan" in [h.text for h in plain]  # the name is in the beam, just behind
    assert plain[0].bias_score == 0.0
    g = graph(["Siobhan Okafor", "Siobhan"], score=1.5, hold=hold)
    biased = decode("call shivon", "call siobhan", 2.0, g)
    best = biased[0]
    assert best.text == "call siobhan"
    assert best.bias_score == pytest.approx(1.5 * len("siobhan "))
    assert best.acoustic_score < plain[0].acoustic_score  # it won on the bias, which stays separate
    for hyp in biased:  # every hypothesis carries exactly the credit its words earn, nothing provisional
        assert hyp.bias_score == pytest.approx(g.score_tokens(hyp.tokens))


def test_a_large_acoustic_margin_is_not_overturned() -> None:
    g = graph(["Siobhan"], score=1.5)
    results = decode("call shivon", "call siobhan", 30.0, g)
    assert results[0].text == "call shivon"


def test_partial_match_credit_is_withdrawn_in_the_search() -> None:
    # "jon" starts the listed "jonathan" but the words are "call jon": the credit it held is taken back.
    g = graph(["Jonathan"], score=1.5)
    results = decode("call jon", "call jan", 2.0, g)
    assert results[0].text == "call jon"
    assert results[0].bias_score == 0.0
    assert all(h.bias_score == pytest.approx(g.score_tokens(h.tokens)) for h in results)
    assert all(h.bias_score <= 0.0 + 1e-9 for h in results)
    plain = decode("call jon", "call jan", 2.0, None)
    assert results[0].acoustic_score == pytest.approx(plain[0].acoustic_score)


@pytest.mark.parametrize(("said", "other", "names"), [
    ("turn it on", "turn it off", ["Offenbach"]),
    ("call jon now", "call jan now", ["Jane", "Janice", "Janet"]),
])
def test_a_list_that_names_nobody_said_does_not_change_the_words(said: str, other: str, names: list[str]) -> None:
    # While "off..." or "jan..." is spelt, the listed names' provisional credit outweighs the acoustic margin;
    # then the match fails and the credit is withdrawn. With the whole beam ranked by acoustic + bias, the
    # words the audio favours had been pushed out by then ("turn it off", "call ja"); half the beam is kept
    # for what the model itself prefers, so they are still there.
    assert decode(said, other, 2.0, None, beam=2)[0].text == said
    results = decode(said, other, 2.0, graph(names, score=3.0, hold=1.0), beam=2)
    assert results[0].text == said
    assert results[0].bias_score == 0.0


def test_a_name_inside_a_longer_word_gets_nothing_in_the_search() -> None:
    g = graph(["Ana"], score=1.5)
    results = decode("banana", "bananas", 1.0, g)
    assert results[0].text == "banana"
    assert all(h.bias_score == 0.0 for h in results)


# ------------------------------------------------------------------------------------------ harkd transcribe


SAMPLE_WAV = Path(__file__).resolve().parents[2] / "daemon" / "samples" / "commands.wav"


def test_transcribe_refuses_an_invalid_bias_file_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bias.json"
    bad.write_text('{"contacts": [{"name": ""}]}')
    status = cli.main(["transcribe", "--bias", str(bad), "--model", str(tmp_path / "no-model"), str(SAMPLE_WAV)])
    err = capsys.readouterr().err
    assert status == 2
    assert str(bad) in err and "$.contacts[0]" in err
    assert "model" not in err.lower()  # refused before any model is loaded


def test_transcribe_with_a_bias_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recognizer_model: tuple[Path, bool]
) -> None:
    model_dir, shipped = recognizer_model
    bias = tmp_path / "household.yaml"
    bias.write_text("contacts: [Siobhan Okafor, {name: Mum, boost: 3}, 東京]\nappliances: [the aquarium pump]\n")
    status = cli.main(["transcribe", "--json", "--bias", str(bias), "--model", str(model_dir), str(SAMPLE_WAV)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert f"biasing toward 5 phrases from {bias}, 1 entry left out" in err  # 2 contacts x 2 forms + pump
    assert "left out '東京'" in err
    result = json.loads(out.splitlines()[-1])
    assert result["nbest"]
    for hyp in result["nbest"]:
        assert hyp["bias_score"] >= 0.0  # a finished hypothesis keeps only credit for complete names
        assert hyp["score"] == pytest.approx(hyp["acoustic_score"] + hyp["bias_score"], abs=2e-4)
    if shipped:
        assert result["text"]

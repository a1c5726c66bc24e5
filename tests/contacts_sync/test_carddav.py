"""The CardDAV client against a real Radicale server with a password (fixture in conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest
from radicale_server import PASSWORD, USER, Radicale, free_port

from contacts_sync.carddav import CardDavClient, CardDavError, CardDavSettings


def card(uid: str, fn: str, n: str = "", extra: str = "") -> str:
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"UID:{uid}", f"FN:{fn}"]
    lines += [f"N:{n}"] if n else []
    lines += [extra] if extra else []
    return "\r\n".join([*lines, "END:VCARD", ""])


@pytest.fixture(scope="module")
def books(radicale: Radicale) -> dict[str, str]:
    family = radicale.make_address_book("family")
    work = radicale.make_address_book("work")
    radicale.put_card("family", "1", card("1", "Siobh\u00e1n Okafor", "Okafor;Siobh\u00e1n;;;", "NICKNAME:Shiv"))
    radicale.put_card("family", "2", card("2", "Mum"))
    # a long name folded over two lines, as servers store it
    long_name = card("3", "Bartholomew Fitzgerald-\r\n Oyelaran", "Fitzgerald-Oyelaran;Bartholomew;;;")
    radicale.put_card("work", "3", long_name)
    for i in range(150):  # more cards than one multiget batch
        radicale.put_card("work", f"w{i}", card(f"w{i}", f"Colleague {i:03d}"))
    return {"family": family, "work": work}


def names(result: Any) -> set[str]:
    return {name for c in result.cards for name, _ in c.names()}


@pytest.mark.parametrize("where", ["root", "principal", "book"])
def test_finds_the_address_books_and_reads_every_card(radicale: Radicale, books: dict[str, str], where: str) -> None:
    url = {"root": radicale.url, "principal": f"{radicale.url}{USER}/", "book": books["family"]}[where]
    client = CardDavClient(CardDavSettings(url, USER, PASSWORD))
    expected_books = sorted(books.values()) if where != "book" else [books["family"]]
    assert client.address_books() == expected_books
    result = client.fetch()
    assert result.warnings == []
    got = names(result)
    assert {"Siobh\u00e1n Okafor", "Siobh\u00e1n", "Shiv", "Mum"} <= got
    if where != "book":
        assert "Bartholomew Fitzgerald-Oyelaran" in got
        assert len(result.cards) == 3 + 150


def test_multiget_fallback_reads_the_same_cards(radicale: Radicale, books: dict[str, str]) -> None:
    client = CardDavClient(CardDavSettings(books["work"], USER, PASSWORD))
    responses = client._multiget(books["work"])
    assert len(responses) == 151  # two batches
    assert all(r.props for r in responses)


def test_wrong_password_is_an_authentication_error(radicale: Radicale, books: dict[str, str]) -> None:
    with pytest.raises(CardDavError, match=f"authentication failed \\(user '{USER}'\\)") as info:
        CardDavClient(CardDavSettings(radicale.url, USER, "wrong")).fetch()
    assert "wrong" not in str(info.value)
    with pytest.raises(CardDavError, match="authentication failed \\(no credentials\\)"):
        CardDavClient(CardDavSettings(books["family"])).fetch()


def test_unreachable_server_and_bad_urls() -> None:
    with pytest.raises(CardDavError, match="cannot reach"):
        CardDavClient(CardDavSettings(f"http://127.0.0.1:{free_port()}/", USER, PASSWORD, timeout_s=2)).fetch()
    with pytest.raises(CardDavError, match="must be http"):
        CardDavClient(CardDavSettings("ftp://example.invalid/book"))


def test_a_collection_that_is_not_ours_or_not_there(radicale: Radicale, books: dict[str, str]) -> None:
    with pytest.raises(CardDavError, match="HTTP 403"):
        CardDavClient(CardDavSettings(f"{radicale.url}bob/", USER, PASSWORD)).fetch()
    with pytest.raises(CardDavError, match=r"HTTP 404|no address book"):
        CardDavClient(CardDavSettings(f"{radicale.url}{USER}/nothing-here/", USER, PASSWORD)).fetch()


def test_answers_over_the_size_limit_are_refused(radicale: Radicale, books: dict[str, str]) -> None:
    with pytest.raises(CardDavError, match="answer larger than"):
        CardDavClient(CardDavSettings(books["work"], USER, PASSWORD, max_bytes=2000)).fetch()

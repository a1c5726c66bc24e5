"""vCard reading: the formats phones and servers export, and bad input that still gives partial results."""

from __future__ import annotations

from pathlib import Path

from contacts_sync.vcard import Card, ParseResult, decode_bytes, parse_vcards, read_vcard_paths

V30 = (
    "BEGIN:VCARD\r\n"
    "VERSION:3.0\r\n"
    "N:Okafor;Siobh\u00e1n;Ada;Dr.;PhD\r\n"
    "FN:Dr. Siobh\u00e1n Okafor\r\n"
    "  PhD\r\n"
    "NICKNAME:Shiv,Vonnie\r\n"
    "ORG:Okafor\\, Lamb & Co.;Research\r\n"
    "item1.TEL;TYPE=\"cell,voice\":+44 20 7946 0000\r\n"
    "END:VCARD\r\n"
)

V40 = """BEGIN:VCARD
VERSION:4.0
KIND:individual
FN:Zo\u00eb Ng
N:Ng;Zo\u00eb;;;
END:VCARD
BEGIN:VCARD
VERSION:4.0
KIND:org
FN:Marlow Dental
ORG:Marlow Dental
END:VCARD
BEGIN:VCARD
VERSION:4.0
KIND:group
FN:Book club
MEMBER:urn:uuid:03a0e51f-d1aa-4385-8a53-e29025acd8af
END:VCARD
"""

# vCard 2.1 as old phones export it: quoted-printable with soft line breaks, bare parameters, a photo whose
# base64 lines are not folded.
V21 = """BEGIN:VCARD
VERSION:2.1
N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;J=C3=B6rg;;;
FN;CHARSET=UTF-8;QUOTED-PRINTABLE:J=C3=B6rg M=C3=BC=
ller
TEL;CELL:0170 000000
PHOTO;ENCODING=BASE64;JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD
/9j/4AAQSkZJRgABAQAAAQABAAD2wBDAAgGBgcGBQgHBwcJ
AAAQABAAD==

END:VCARD
BEGIN:VCARD
VERSION:2.1
N;ENCODING=QUOTED-PRINTABLE;CHARSET=ISO-8859-1:Fran=E7ois;Ren=E9e;;;
END:VCARD
"""


def test_vcard_30_folded_lines_escapes_n_and_fn() -> None:
    result = parse_vcards(V30, "a.vcf")
    assert result.warnings == []
    [card] = result.cards
    assert card.formatted == "Dr. Siobh\u00e1n Okafor PhD"
    assert (card.family, card.given, card.additional, card.prefix, card.suffix) == (
        "Okafor", "Siobh\u00e1n", "Ada", "Dr.", "PhD")
    assert card.nicknames == ("Shiv", "Vonnie")
    assert card.organization == "Okafor, Lamb & Co."
    assert card.names() == [
        ("Dr. Siobh\u00e1n Okafor PhD", "formatted"),
        ("Siobh\u00e1n Okafor", "full"),
        ("Siobh\u00e1n", "given"),
        ("Shiv", "nickname"),
        ("Vonnie", "nickname"),
    ]
    assert ("Siobh\u00e1n", "given") not in card.names(given_names=False)
    assert card.source == "a.vcf:1"


def test_vcard_40_kinds_organisations_and_groups() -> None:
    result = parse_vcards(V40)
    assert [c.names() for c in result.cards] == [
        [("Zo\u00eb Ng", "formatted"), ("Zo\u00eb", "given")],
        [("Marlow Dental", "formatted")],
    ]  # the group card is not a name to call
    assert result.warnings == []


def test_an_organisation_is_a_name_only_for_a_business_card() -> None:
    business = Card(organization="Joe's Pizza")
    person = Card(formatted="Ana Lucia", given="Ana", family="Lucia", organization="Acme")
    assert business.names() == [("Joe's Pizza", "organization")]
    assert ("Acme", "organization") not in person.names()


def test_vcard_21_quoted_printable_with_soft_breaks_and_charsets() -> None:
    result = parse_vcards(V21, "phone.vcf")
    assert result.warnings == []
    first, second = result.cards
    assert first.formatted == "J\u00f6rg M\u00fcller"
    assert (first.given, first.family) == ("J\u00f6rg", "M\u00fcller")
    assert second.full_name == "Ren\u00e9e Fran\u00e7ois"


def test_utf8_bom_and_windows_1252_files() -> None:
    result = ParseResult()
    assert decode_bytes("\ufeffBEGIN:VCARD".encode(), "x", result) == "BEGIN:VCARD"
    assert result.warnings == []
    text = decode_bytes(b"BEGIN:VCARD\nFN:Jos\xe9\nEND:VCARD\n", "old.vcf", result)
    assert "Jos\u00e9" in text
    assert result.warnings == ["old.vcf: not UTF-8; read as Windows-1252"]


def test_malformed_input_gives_warnings_and_partial_results() -> None:
    text = (
        "FN:Stray\n"  # outside a card
        "BEGIN:VCARD\nVERSION:3.0\nFN:Ana Lucia\nthis line is not a property\nEND:VCARD\n"
        "END:VCARD\n"  # END without BEGIN
        "BEGIN:VCARD\nVERSION:3.0\nTEL:123\nEND:VCARD\n"  # no name at all
        "BEGIN:VCARD\nFN:Bob Stone\n"  # no END before the next BEGIN
        "BEGIN:VCARD\nN:Ng;Zoe;;;\n"  # no END at the end of the input
    )
    result = parse_vcards(text, "bad.vcf")
    assert [c.names()[0][0] for c in result.cards] == ["Ana Lucia", "Bob Stone", "Zoe Ng"]
    joined = "\n".join(result.warnings)
    assert "bad.vcf:1: FN outside a card" in joined
    assert "bad.vcf:5: not a vCard property" in joined
    assert "bad.vcf:7: END:VCARD without BEGIN:VCARD" in joined
    assert "bad.vcf:8: card without a name" in joined
    assert "bad.vcf:12: card has no END:VCARD before the next BEGIN:VCARD" in joined
    assert "bad.vcf:14: the last card has no END:VCARD" in joined


def test_garbage_gives_no_cards_and_no_exception() -> None:
    result = parse_vcards("\x00\x01 binary garbage\n:::\n;;;\nBEGIN:VCARD\n" * 3)
    assert result.cards == []
    assert result.warnings


def test_too_many_warnings_are_summarised() -> None:
    result = parse_vcards("BEGIN:VCARD\nFN:A\n" + "nonsense line\n" * 200 + "END:VCARD\n")
    assert len(result.cards) == 1
    assert len(result.warnings) == 50
    assert result.all_warnings()[-1] == "... and 150 more warnings"


def test_read_paths_files_directories_and_failures(tmp_path: Path) -> None:
    book = tmp_path / "book"
    (book / "sub").mkdir(parents=True)
    (book / "a.vcf").write_text(V30)
    (book / "sub" / "b.VCF").write_text(V40)
    (book / "notes.txt").write_text("FN:not a card file\n")
    single = tmp_path / "one.vcard"
    single.write_bytes(V21.encode())
    result, failed = read_vcard_paths([book, single, tmp_path / "absent.vcf"])
    assert len(result.cards) == 5
    assert failed == [f"{tmp_path / 'absent.vcf'}: no such file or directory"]
    assert {Path(c.source.rsplit(":", 1)[0]).name for c in result.cards} == {"a.vcf", "b.VCF", "one.vcard"}

"""The whole sync: vCard files, a real CardDAV server and Home Assistant discovery on a real broker, merged,
written and published; failures that keep the last good list; ``harkd contacts``; the systemd units."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from radicale_server import PASSWORD, USER, Radicale

from contacts_sync.carddav import CardDavSettings
from contacts_sync.homeassistant import DiscoveryState
from contacts_sync.link import SyncLink
from contacts_sync.sync import SourceResult, SyncSettings, merge, run_sync
from daemon import cli
from daemon.bias import BiasGraph, load_bias_file
from daemon.messages import BiasSet, decode
from daemon.mqtt import MqttSettings, Topics
from daemon.textnorm import ALPHABET
from daemon.tokens import TokenTable

REPO = Path(__file__).resolve().parents[2]
P = "homeassistant"


def vcard(fn: str, n: str = "", extra: str = "") -> str:
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"UID:{abs(hash(fn))}", f"FN:{fn}"]
    lines += ([f"N:{n}"] if n else []) + ([extra] if extra else [])
    return "\n".join([*lines, "END:VCARD", ""])


# ------------------------------------------------------------------------------------------ merging


def test_merge_normalises_deduplicates_and_ranks() -> None:
    phone = SourceResult("vcard:a", contacts=[("Dr. Siobhán Okafor", "formatted"), ("Siobhán", "given"),
                                               ("Shiv", "nickname"), ("Zoë Ng", "full")])
    server = SourceResult("carddav:b", contacts=[("SIOBHAN", "nickname"), ("zoe ng", "formatted"), ("東京", "full")])
    ha = SourceResult("homeassistant:c", appliances=["The Aquarium Pump", "Hall ceiling", "hall  Ceiling"])
    document, warnings = merge([phone, server, ha])
    assert warnings == []
    assert document.contacts == BiasSet.of(["doctor siobhan okafor", "shiv", "siobhan", "zoe ng"]).contacts
    assert [e.name for e in document.appliances] == ["hall ceiling", "the aquarium pump"]
    assert document.version and len(document.version) == 16
    assert merge([ha, server, phone])[0] == document  # the order of the sources does not matter


def test_merge_caps_an_enormous_list_keeping_the_likeliest_names() -> None:
    contacts = [(f"Person{i:04d} Family", "formatted") for i in range(3000)]
    contacts += [(f"Given{i:04d}", "given") for i in range(3000)]
    contacts += [("one two three four five six seven eight nine", "formatted")]
    ha = SourceResult("homeassistant:x", appliances=[f"lamp {i}" for i in range(10)])
    document, warnings = merge([SourceResult("vcard:x", contacts=contacts), ha], max_entries=1000)
    assert len(document.phrases) == 1000
    assert len(document.appliances) == 10  # appliances first
    assert all(not e.name.startswith("given") for e in document.contacts)  # given names alone go first
    assert any("capped at 1000" in w for w in warnings)
    assert any("1 names longer than 8 words" in w for w in warnings)


# ------------------------------------------------------------------------------------------ whole syncs


@pytest.fixture(scope="module")
def book(radicale: Radicale) -> str:
    url = radicale.make_address_book("phone")
    radicale.put_card("phone", "1", vcard("Siobhan Okafor", "Okafor;Siobhan;;;", "NICKNAME:Shiv"))
    radicale.put_card("phone", "2", vcard("Bartholomew Oyelaran", "Oyelaran;Bartholomew;;;"))
    return url


def mqtt(broker: Any) -> MqttSettings:
    return MqttSettings(device_id="kitchen", host=broker.host, port=broker.port, reconnect_min_s=0.1,
                        reconnect_max_s=0.5, keepalive_s=5)


def sync_once(settings: SyncSettings, broker: Any) -> Any:
    state = DiscoveryState(P)
    link = SyncLink(mqtt(broker), state)
    link.connect()
    try:
        link.wait_settled(quiet_s=0.3, max_s=5)
        return run_sync(settings, link, state)
    finally:
        link.close()


def test_full_sync_writes_and_publishes_and_a_failed_sync_keeps_the_last_good_list(
    tmp_path: Path, book: str, mosquitto: Any, mqtt_collector: Any
) -> None:
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "family.vcf").write_text(vcard("Zoë Ng", "Ng;Zoë;;;") + "garbage line\n" + vcard("Mum"))
    ha = mqtt_collector([f"{P}/#"])
    ha.publish(f"{P}/switch/aquarium/config", json.dumps({"name": None, "dev": {"name": "Aquarium pump"}}).encode(),
               retain=True)
    ha.publish(f"{P}/light/hall/config", json.dumps({"name": "Hall ceiling"}).encode(), retain=True)
    state_dir = tmp_path / "state"
    settings = SyncSettings(vcard_paths=(cards,), carddav=CardDavSettings(book, USER, PASSWORD), state_dir=state_dir,
                            max_entries=100)

    report = sync_once(settings, mosquitto)
    assert report.exit_status == 0, (report.errors, report.warnings)
    assert report.published and report.written == state_dir / "bias.json"
    assert any("not a vCard property" in w for w in report.warnings)  # bad input: a warning, partial result
    good = load_bias_file(state_dir / "bias.json")
    assert [e.name for e in good.contacts] == [
        "bartholomew", "bartholomew oyelaran", "mum", "shiv", "siobhan", "siobhan okafor", "zoe", "zoe ng"]
    assert [e.name for e in good.appliances] == ["aquarium pump", "hall ceiling"]
    retained = mqtt_collector([Topics("kitchen").bias_set]).get(5)
    assert retained.retain and decode(BiasSet, retained.payload) == good
    # what the daemon builds from it
    graph = BiasGraph.from_document(good, TokenTable.from_alphabet(ALPHABET), 1.0)
    assert graph.score_text("call siobhan okafor now") == pytest.approx(15.0)

    # Next run: the CardDAV password is wrong, the vCard file became garbage, Home Assistant renamed a light.
    (cards / "family.vcf").write_bytes(b"\x00\x01\x02 not a vcard at all\n")
    ha.publish(f"{P}/light/hall/config", json.dumps({"name": "Hallway ceiling"}).encode(), retain=True)
    broken = SyncSettings(vcard_paths=(cards,), carddav=CardDavSettings(book, USER, "wrong"), state_dir=state_dir)
    report = sync_once(broken, mosquitto)
    assert report.exit_status == 1
    joined = "\n".join(report.warnings)
    assert "authentication failed" in joined and "using its last good list" in joined
    assert "it gave no names, only errors" in joined
    after = load_bias_file(state_dir / "bias.json")
    assert [e.name for e in after.contacts] == [e.name for e in good.contacts]  # nothing wiped
    assert [e.name for e in after.appliances] == ["aquarium pump", "hallway ceiling"]  # the rename followed


def test_nothing_is_written_when_no_source_was_ever_read(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    settings = SyncSettings(vcard_paths=(tmp_path / "absent.vcf",), homeassistant=False, state_dir=state_dir,
                            publish=False)
    report = run_sync(settings)
    assert report.exit_status == 2 and report.document is None
    assert not (state_dir / "bias.json").exists()
    assert "no source could be read" in report.errors[0]
    empty = run_sync(SyncSettings(homeassistant=False, publish=False))
    assert empty.exit_status == 2 and "nothing to sync" in empty.errors[0]


def test_an_unreachable_broker_fails_only_the_home_assistant_source(tmp_path: Path) -> None:
    cards = tmp_path / "c.vcf"
    cards.write_text(vcard("Ana Lucia"))
    settings = SyncSettings(vcard_paths=(cards,), state_dir=tmp_path / "state")
    report = run_sync(settings, None, DiscoveryState(P), link_error="cannot reach the MQTT broker at x")
    assert report.exit_status == 1
    assert report.written is not None and [e.name for e in report.document.contacts] == ["ana lucia"]  # type: ignore[union-attr]
    assert any("not published: cannot reach" in e for e in report.errors)


# ------------------------------------------------------------------------------------------ the command


def write_config(tmp_path: Path, broker: Any, cards: Path, book: str) -> Path:
    path = tmp_path / "harkd.yaml"
    path.write_text(
        "device_id: kitchen\nprofile: none\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"mqtt: {{host: {broker.host}, port: {broker.port}}}\n"
        f"contacts: {{vcard_paths: [{cards}], carddav_url: '{book}', carddav_username: {USER}}}\n"
    )
    return path


def test_harkd_contacts_sync_and_dry_run(
    tmp_path: Path, book: str, mosquitto: Any, mqtt_collector: Any, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cards = tmp_path / "me.vcf"
    cards.write_text(vcard("Ana Lucía", "Lucía;Ana;;;"))
    config = write_config(tmp_path, mosquitto, cards, book)
    monkeypatch.setenv("HARKD_CARDDAV_PASSWORD", PASSWORD)

    status = cli.main(["contacts", "sync", "--config", str(config), "--dry-run", "--discovery-wait", "1"])
    out, err = capsys.readouterr()
    assert status == 0, err
    printed = BiasSet.from_dict(json.loads(out))
    assert {"ana lucia", "siobhan okafor"} <= {e.name for e in printed.contacts}
    assert not (tmp_path / "state" / "bias.json").exists()  # a dry run writes nothing

    status = cli.main(["contacts", "sync", "--config", str(config), "--discovery-wait", "1"])
    _, err = capsys.readouterr()
    assert status == 0, err
    assert load_bias_file(tmp_path / "state" / "bias.json") == printed
    assert "delivered to" in err and "MQTT (retained)" in err
    assert PASSWORD not in err
    retained = mqtt_collector([Topics("kitchen").bias_set]).get(5)
    assert decode(BiasSet, retained.payload) == printed

    monkeypatch.delenv("HARKD_CARDDAV_PASSWORD")
    status = cli.main(["contacts", "sync", "--config", str(config), "--discovery-wait", "1"])
    _, err = capsys.readouterr()
    assert status == 1 and "authentication failed" in err and "last good list" in err


def test_harkd_contacts_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.vcf").write_text(vcard("Siobhan Okafor", "Okafor;Siobhan;;;", "NICKNAME:Shiv") + "junk\n")
    assert cli.main(["contacts", "show", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "Siobhan Okafor (formatted), Siobhan (given), Shiv (nickname)" in out
    assert "not a vCard property" in err
    assert cli.main(["contacts", "show", str(tmp_path / "absent.vcf")]) == 1


def test_harkd_contacts_watch_follows_home_assistant_live(
    tmp_path: Path, book: str, mosquitto: Any, mqtt_collector: Any
) -> None:
    cards = tmp_path / "me.vcf"
    cards.write_text(vcard("Ana Lucia"))
    config = write_config(tmp_path, mosquitto, cards, book)
    ha = mqtt_collector([f"{P}/#"])
    ha.publish(f"{P}/fan/attic/config", json.dumps({"name": "Attic fan"}).encode(), retain=True)
    bias = mqtt_collector([Topics("kitchen").bias_set])
    env = {"HARKD_CARDDAV_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "contacts", "watch", "--config", str(config),
                                "--discovery-wait", "1"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)

    def next_list(timeout: float = 15) -> BiasSet:
        deadline = time.monotonic() + timeout
        while True:
            message = bias.get(max(0.1, deadline - time.monotonic()))
            if message.payload:
                return decode(BiasSet, message.payload)

    try:
        first = next_list()
        assert [e.name for e in first.appliances] == ["attic fan"]
        assert {"ana lucia", "siobhan okafor"} <= {e.name for e in first.contacts}
        ha.publish(f"{P}/fan/attic/config", json.dumps({"name": "Loft fan"}).encode(), retain=True)
        assert [e.name for e in next_list().appliances] == ["loft fan"]
        ha.publish(f"{P}/fan/attic/config", b"", retain=True)
        assert next_list().appliances == ()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import cli
from daemon.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULTS_PATH,
    MASK,
    Config,
    ConfigError,
    ConfigIssue,
    known_paths,
    load_config,
    parse_config,
)
from daemon.paths import default_model_dir


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def issues_of(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, ConfigIssue]:
    return {issue.path: issue for issue in exc.value.issues}


def flatten(data: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


# ------------------------------------------------------------------------------------------ defaults


def test_defaults_file_lists_every_setting_and_matches_the_schema() -> None:
    data = yaml.safe_load(DEFAULTS_PATH.read_text())
    assert sorted(flatten(data)) == sorted(known_paths())
    from_file = parse_config(data, source="defaults.yaml")
    assert dataclasses.replace(from_file, profile="auto") == Config()


def test_every_field_has_a_comment() -> None:
    # The schema's promise: each setting carries a comment on its line (its unit or meaning).
    import ast

    path = Path(__file__).resolve().parents[2] / "daemon" / "config.py"
    lines = path.read_text().splitlines()
    checked = 0
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, ast.ClassDef) or not node.name.endswith("Config"):
            continue
        for item in node.body:
            if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
                continue
            text = "\n".join(lines[item.lineno - 1:(item.end_lineno or item.lineno)])
            if ("default_factory=" in text and "Config" in text) or item.target.id == "sources":
                continue  # a nested section, documented by its own class
            last_line = lines[(item.end_lineno or item.lineno) - 1]
            assert "#" in last_line, f"{node.name}.{item.target.id} has no comment"
            checked += 1
    assert checked >= len(known_paths())


def test_no_file_and_no_profile_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(None, profile_name="none")
    assert config.profile == "none"
    assert dataclasses.replace(config, profile="auto") == Config()
    assert config.sources == (f"defaults ({DEFAULTS_PATH})",)
    assert config.mqtt.port == 1883 and config.endpoint.final_silence_ms == 600
    assert config.endpoint.speculative_lead_ms == 200 and config.state_dir == Path("/var/lib/harkd")


def test_the_default_path_may_be_absent_but_a_named_file_may_not(tmp_path: Path) -> None:
    if DEFAULT_CONFIG_PATH.exists():
        pytest.skip(f"{DEFAULT_CONFIG_PATH} exists on this machine")
    assert load_config(profile_name="none").mqtt.host == "localhost"
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", profile_name="none")


def test_derived_values() -> None:
    config = parse_config({"device_id": "kitchen", "state_dir": "/srv/harkd",
                           "mqtt": {"prefix": "home/harkd"}})
    assert config.topic_prefix == "home/harkd/kitchen"
    assert config.mqtt_client_id == "harkd-kitchen"
    assert config.outbox_path == Path("/srv/harkd/outbox.db")
    assert config.recognizer.model_path == default_model_dir("recognizer")
    explicit = parse_config({"recognizer": {"model_dir": "/opt/m"}})
    assert explicit.recognizer.model_path == Path("/opt/m")
    assert parse_config({"device_id": None}).device_id == Config().device_id  # null: the host name


# ------------------------------------------------------------------------------------------ layering


def test_layers_override_in_order(tmp_path: Path) -> None:
    path = write(tmp_path / "harkd.yaml", """
profile: pi-4
audio: {block_ms: 30}
recognizer: {beam_size: 5}
mqtt: {host: broker.lan, port: 8883}
""")
    config = load_config(path, ["mqtt.port=1884", "wake.threshold=0.7"])
    assert config.profile == "pi-4"
    assert config.recognizer.threads == 2  # from the profile
    assert config.audio.buffer_ms == 2000  # from the profile (same as the defaults)
    assert config.audio.block_ms == 30  # the file beats the profile (20)
    assert config.recognizer.beam_size == 5  # the file beats the profile (4)
    assert (config.mqtt.host, config.mqtt.port) == ("broker.lan", 1884)  # --set beats the file
    assert config.wake.threshold == 0.7
    assert config.endpoint.final_silence_ms == 600  # untouched: the defaults
    assert [s.split(" ")[0] for s in config.sources] == ["defaults", "firmware", str(path), "--set"]


def test_profile_argument_beats_the_file_and_auto_detection(tmp_path: Path) -> None:
    path = write(tmp_path / "harkd.yaml", "profile: pi-4\n")
    assert load_config(path, profile_name="pi-zero-2-w").recognizer.beam_size == 2
    assert load_config(path, ["profile=pi-5"]).recognizer.beam_size == 6
    assert load_config(path).profile == "pi-4"


def test_auto_detection_uses_the_device_model(tmp_path: Path) -> None:
    config = load_config(None, device_model="Raspberry Pi Zero 2 W Rev 1.0")
    assert config.profile == "pi-zero-2-w" and config.audio.block_ms == 40
    assert load_config(None, device_model="Raspberry Pi 5 Model B Rev 1.0").profile == "pi-5"


def test_unknown_profile_is_an_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, profile_name="pi4")
    issue = issues_of(info)["profile"]
    assert "pi4" in issue.message and issue.hint == "did you mean 'pi-4'?"


def test_empty_sections_and_files_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "harkd.yaml", "# all commented out\nmqtt:\naudio:\n")
    assert load_config(path, profile_name="none").mqtt.host == "localhost"
    assert load_config(write(tmp_path / "empty.yaml", ""), profile_name="none").audio.source == "mic"


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc" / "harkd.yaml", """
state_dir: state
bias: {file: bias.json}
mqtt: {tls: {enabled: true, ca: certs/ca.pem}}
contacts: {vcard_paths: [cards, /abs/cards]}
""")
    config = load_config(path, profile_name="none")
    base = (tmp_path / "etc").resolve()
    assert config.state_dir == base / "state"
    assert config.bias.file == base / "bias.json"
    assert config.mqtt.tls.ca == base / "certs/ca.pem"
    assert config.contacts.vcard_paths == (base / "cards", Path("/abs/cards"))


def test_set_values_are_read_as_yaml(tmp_path: Path) -> None:
    config = load_config(None, ["audio.device=3", "mqtt.hermes=true", "mqtt.username=alice",
                                "audio.device=USB Audio", "mqtt.protocol=3.1.1", "bias.boost=2"],
                         profile_name="none")
    assert config.audio.device == "USB Audio" and config.mqtt.hermes is True
    assert config.mqtt.protocol == "3.1.1" and config.bias.boost == 2.0
    assert load_config(None, ["audio.device=3"], profile_name="none").audio.device == 3
    assert load_config(None, ["audio.device='3'"], profile_name="none").audio.device == "3"


# ------------------------------------------------------------------------------------------ validation


def test_every_error_is_reported_at_once_with_paths_and_hints(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", """
host: broker.lan
recogniser: {threads: 2}
audio:
  sorce: file
  block_ms: twenty
  pace: fats
mqtt:
  hots: x
  port: 70000
  qos: true
endpoint: {speculative_lead_ms: 700}
""")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["wake.threshhold=0.4", "nonsense"], profile_name="none")
    found = issues_of(info)
    assert found["host"].hint == "did you mean 'mqtt.host'?"
    assert found["recogniser"].hint == "did you mean 'recognizer'?"
    assert found["audio.sorce"].hint == "did you mean 'audio.source'?"
    assert found["mqtt.hots"].hint == "did you mean 'mqtt.host'?"
    assert found["wake.threshhold"].hint == "did you mean 'wake.threshold'?"
    assert found["wake.threshhold"].source == "--set"
    assert "must be an integer" in found["audio.block_ms"].message
    assert found["audio.pace"].hint == "did you mean 'fast'?"
    assert "out of range (1–65535" in found["mqtt.port"].message
    assert "must be an integer, not a boolean" in found["mqtt.qos"].message
    assert "shorter than endpoint.final_silence_ms" in found["endpoint.speculative_lead_ms"].message
    assert found["mqtt.port"].source == str(path)
    assert any("nonsense" in issue.message for issue in info.value.issues)
    assert len(info.value.issues) == 11
    text = str(info.value)
    assert text.startswith("11 problems in the configuration:") and "mqtt.port: 70000 is out of range" in text


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({
            "device_id": "kitchen/1",
            "audio": {"source": "file", "block_ms": 100, "buffer_ms": 300},
            "mqtt": {"password": "pw", "prefix": "harkd/#", "tls": {"ca": "/ca.pem", "key": "/k.pem"},
                     "reconnect_min_s": 100, "reconnect_max_s": 10, "hermes_wakeword_id": "a/b"},
            "contacts": {"carddav_username": "me"},
            "recognizer": {"model": "../elsewhere"},
        })
    found = issues_of(info)
    assert set(found) == {"device_id", "audio.file", "audio.buffer_ms", "mqtt.password", "mqtt.prefix",
                          "mqtt.tls.ca", "mqtt.tls.key", "contacts.carddav_url", "recognizer.model",
                          "mqtt.reconnect_min_s", "mqtt.hermes_wakeword_id"}
    assert found["mqtt.tls.ca"].hint == "set mqtt.tls.enabled: true"
    assert "4 × audio.block_ms" in (found["audio.buffer_ms"].hint or "")


def test_a_bad_value_does_not_cause_follow_up_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"endpoint": {"final_silence_ms": "long", "speculative_lead_ms": 150}})
    assert list(issues_of(info)) == ["endpoint.final_silence_ms"]


def test_types_are_strict_where_it_matters() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"mqtt": {"port": "1883", "hermes": "yes please", "tls": "on"},
                      "audio": {"device": [1, 2], "file": 5}, "metrics": {"interval_s": True}})
    found = issues_of(info)
    assert set(found) == {"mqtt.port", "mqtt.hermes", "mqtt.tls", "audio.device", "audio.file",
                          "metrics.interval_s"}
    assert "must be a mapping" in found["mqtt.tls"].message
    # Friendly where YAML makes it easy to get wrong: numbers for strings, yes/no for on/off, case.
    config = parse_config({"mqtt": {"password": 1234, "username": 42, "protocol": 5},
                           "logging": {"level": "debug", "journald": False}, "bias": {"boost": 2}})
    assert config.mqtt.password == "1234" and config.mqtt.username == "42" and config.mqtt.protocol == "5"
    assert config.logging.level == "DEBUG" and config.logging.journald == "off"
    assert isinstance(config.bias.boost, float)


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", "mqtt:\n  host: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+") as info:
        load_config(path, profile_name="none")
    assert info.value.issues[0].source == str(path)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path / "list.yaml", "- a\n- b\n"), profile_name="none")


# ------------------------------------------------------------------------------------------ secrets


def test_secrets_are_masked_everywhere_they_could_leak(tmp_path: Path) -> None:
    config = parse_config({"mqtt": {"username": "u", "password": "hunter2"},
                           "contacts": {"carddav_url": "https://dav.example/", "carddav_password": "s3cr3t"}})
    assert config.mqtt.password == "hunter2"  # the daemon can still use it
    for text in (config.dump(), repr(config), str(config.to_dict())):
        assert "hunter2" not in text and "s3cr3t" not in text
    dumped = yaml.safe_load(config.dump())
    assert dumped["mqtt"]["password"] == MASK and dumped["contacts"]["carddav_password"] == MASK
    assert dumped["mqtt"]["username"] == "u"
    assert config.to_dict(mask_secrets=False)["mqtt"]["password"] == "hunter2"
    # Unset secrets dump as null, not as a mask.
    assert yaml.safe_load(Config().dump())["mqtt"]["password"] is None


def test_errors_do_not_echo_secret_values() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"mqtt": {"password": ["hunter2"]}})
    assert "hunter2" not in str(info.value)


# ------------------------------------------------------------------------------------------ check-config


def test_check_config_prints_the_masked_effective_config(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "harkd.yaml", "mqtt: {username: u, password: hunter2}\n")
    status = cli.main(["check-config", str(path), "--profile", "pi-3", "--set", "mqtt.port=1999"])
    out, err = capsys.readouterr()
    assert status == 0
    assert "hunter2" not in out and "hunter2" not in err
    body = yaml.safe_load(out)
    assert body["mqtt"]["port"] == 1999 and body["mqtt"]["password"] == MASK and body["profile"] == "pi-3"
    assert "firmware profile pi-3 suggests CPUWeight=600" in out


def test_check_config_lists_every_error_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "harkd.yaml", "mqtt: {prot: 1883, qos: 9}\nwake: {threshold: 2}\n")
    status = cli.main(["check-config", str(path), "--profile", "none"])
    out, err = capsys.readouterr()
    assert status == 1 and out == ""
    assert "3 problems" in err and "did you mean 'mqtt.port'?" in err
    assert "mqtt.qos" in err and "wake.threshold" in err


def test_check_config_strict_fails_on_missing_files(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "harkd.yaml", f"bias: {{file: {tmp_path / 'absent.json'}}}\n"
                                          f"recognizer: {{model_dir: {tmp_path}}}\n"
                                          f"wake: {{model_dir: {tmp_path}}}\n")
    assert cli.main(["check-config", str(path), "--profile", "none"]) == 0
    assert "warning: bias.file" in capsys.readouterr().err
    assert cli.main(["check-config", str(path), "--profile", "none", "--strict"]) == 1
    err = capsys.readouterr().err
    assert "error: bias.file" in err and "recognizer" not in err

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.profiles import (
    PROFILE_DIRS,
    ProfileError,
    detect_profile,
    list_profiles,
    load_profile,
    profiles_dir,
    read_device_model,
    read_profile,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ["generic-x86-64", "pi-3", "pi-4", "pi-5", "pi-zero-2-w"]


def test_the_shipped_profiles_are_found_in_the_checkout() -> None:
    assert profiles_dir() in (REPO / "firmware_profiles", PROFILE_DIRS[0])
    assert [p.name for p in list_profiles()] == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_each_profile_is_a_valid_config_layer(name: str) -> None:
    profile = load_profile(name)
    assert profile.description and profile.cpu_weight > 100  # more than media.slice
    config = load_config(None, profile_name=name)
    assert config.profile == name
    # Every profile sets the board-dependent knobs explicitly.
    for section, key in [("audio", "block_ms"), ("audio", "buffer_ms"), ("recognizer", "threads"),
                         ("recognizer", "beam_size"), ("recognizer", "model")]:
        assert key in profile.settings[section], f"{name} does not set {section}.{key}"
        assert getattr(getattr(config, section), key) == profile.settings[section][key]


@pytest.mark.parametrize(("model", "expected"), [
    ("Raspberry Pi Zero 2 W Rev 1.0", "pi-zero-2-w"),
    ("Raspberry Pi 3 Model B Rev 1.2", "pi-3"),
    ("Raspberry Pi 3 Model B Plus Rev 1.3", "pi-3"),
    ("Raspberry Pi 3 Model A Plus Rev 1.0", "pi-3"),
    ("Raspberry Pi Compute Module 3 Plus Rev 1.0", "pi-3"),
    ("Raspberry Pi 4 Model B Rev 1.4", "pi-4"),
    ("Raspberry Pi 400 Rev 1.0", "pi-4"),
    ("Raspberry Pi Compute Module 4 Rev 1.0", "pi-4"),
    ("Raspberry Pi 5 Model B Rev 1.0", "pi-5"),
    ("Raspberry Pi 500 Rev 1.0", "pi-5"),
    ("Raspberry Pi Compute Module 5 Rev 1.0", "pi-5"),
    ("raspberry pi 4 model b rev 1.5", "pi-4"),
])
def test_detection_from_device_tree_model_strings(model: str, expected: str) -> None:
    found = detect_profile(model, machine="aarch64")
    assert found is not None and found.name == expected


def test_without_a_matching_board_the_architecture_decides() -> None:
    generic = detect_profile(None, machine="x86_64")
    assert generic is not None and generic.name == "generic-x86-64"
    assert detect_profile("Some Other Board", machine="AMD64") == generic
    assert detect_profile(None, machine="aarch64") is None  # an unknown ARM board: defaults, no guess
    assert detect_profile("Raspberry Pi Model B Rev 2", machine="armv6l") is None  # the first Pi: unsupported


def test_the_most_specific_pattern_wins_and_ties_are_errors(tmp_path: Path) -> None:
    (tmp_path / "broad.yaml").write_text('match: {models: ["Acme *"]}\n')
    (tmp_path / "narrow.yaml").write_text('match: {models: ["Acme Board 2*"]}\n')
    assert detect_profile("Acme Board 2 rev b", directory=tmp_path).name == "narrow"  # type: ignore[union-attr]
    assert detect_profile("Acme Board 1", directory=tmp_path).name == "broad"  # type: ignore[union-attr]
    (tmp_path / "twin.yaml").write_text('match: {models: ["Acme Board 2*"]}\n')
    with pytest.raises(ProfileError, match="narrow and twin equally"):
        detect_profile("Acme Board 2", directory=tmp_path)


def test_read_device_model_strips_the_nul_terminator(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert read_device_model([tmp_path / "absent", model]) == "Raspberry Pi 4 Model B Rev 1.4"
    assert read_device_model([tmp_path / "absent"]) is None
    found = detect_profile(read_device_model([model]))
    assert found is not None and found.name == "pi-4"


def test_unknown_profile_name_suggests_the_closest() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("pi-zero2w")
    assert info.value.hint == "did you mean 'pi-zero-2-w'?"
    with pytest.raises(ProfileError):
        load_profile("../firmware_profiles/pi-4")


@pytest.mark.parametrize(("text", "message"), [
    ("matches: {models: [x]}\n", "unknown key 'matches'"),
    ("cpu_weight: 0\n", "cpu_weight must be an integer from 1 to 10000"),
    ("match: {models: x}\n", "match.models must be a list"),
    ("match: {boards: [x]}\n", "'match' must be a mapping"),
    ("settings: [1]\n", "'settings' must be a mapping"),
    ("- a\n", "must be a mapping"),
    ("match: {models: [unclosed\n", "not valid YAML"),
])
def test_malformed_profiles_are_rejected_with_the_file_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        read_profile(path)
    assert str(path) in str(info.value)


def test_a_profile_with_bad_settings_is_reported_as_the_profile_s_fault(tmp_path: Path) -> None:
    (tmp_path / "odd.yaml").write_text("settings: {audio: {blok_ms: 20}, recognizer: {threads: 99}}\n")
    from daemon.config import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, profile_name="odd", profiles_dir=tmp_path)
    found = {issue.path: issue for issue in info.value.issues}
    assert found["audio.blok_ms"].hint == "did you mean 'audio.block_ms'?"
    assert "firmware profile odd" in (found["recognizer.threads"].source or "")

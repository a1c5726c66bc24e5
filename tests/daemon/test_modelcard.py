from __future__ import annotations

from pathlib import Path

import pytest

from daemon.modelcard import ModelCard, ModelError, load_card, sha256_file


def _model_dir(tmp_path: Path) -> Path:
    (tmp_path / "encoder.tflite").write_bytes(b"graph bytes")
    (tmp_path / "tokens.json").write_text('["<blank>", " ", "a"]\n')
    card = ModelCard(
        name="test", kind="recognizer", version="1",
        files={n: sha256_file(tmp_path / n) for n in ("encoder.tflite", "tokens.json")},
        frontend={"n_mels": 40}, model={"chunk_features": 24}, details={"metrics": {"wer": 1.0}},
    )
    card.save(tmp_path)
    return tmp_path


def test_round_trip_and_verification(tmp_path: Path) -> None:
    card = load_card(_model_dir(tmp_path))
    assert card.details == {"metrics": {"wer": 1.0}}
    assert card.model["chunk_features"] == 24


def test_tampered_file_is_refused_by_name(tmp_path: Path) -> None:
    directory = _model_dir(tmp_path)
    (directory / "encoder.tflite").write_bytes(b"other bytes")
    with pytest.raises(ModelError, match=r"encoder\.tflite: sha256 .* does not match"):
        load_card(directory)


def test_missing_file_and_missing_card(tmp_path: Path) -> None:
    directory = _model_dir(tmp_path)
    (directory / "tokens.json").unlink()
    with pytest.raises(ModelError, match=r"tokens\.json: listed in the model card but missing"):
        load_card(directory)
    with pytest.raises(ModelError, match="no model card"):
        load_card(tmp_path / "nowhere")


def test_malformed_card(tmp_path: Path) -> None:
    (tmp_path / "card.yaml").write_text("name: x\nfiles: {a: notahash}\n")
    with pytest.raises(ModelError, match="missing field"):
        load_card(tmp_path)
    (tmp_path / "card.yaml").write_text(": : :\n  - [")
    with pytest.raises(ModelError, match="cannot read model card"):
        load_card(tmp_path)

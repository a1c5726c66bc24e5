"""The recipe's smoke configuration end to end: synthesise, train, export int8, evaluate, package, decode.

This is the CI proof that the recipe still produces a model that loads in the runtime and decodes; it
takes a few minutes on two cores (espeak-ng only, a tiny model, a dozen training steps).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from daemon.recognizer import Recognizer
from training.train import bf16_supported

pytest.importorskip("torch", reason="training extra (torch) not installed")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng not installed (packaging/install-system-deps.sh installs it)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("recipe")
    cmd = [sys.executable, "-m", "training.recipe", "--config", "training/configs/recognizer-smoke.yaml",
           "--work", str(work)]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=900)
    # Re-running finds every stage up to date and skips it.
    again = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True, timeout=120)
    assert again.stderr.count("up to date, skipped") == 8
    return work / "recognizer-smoke"


def test_package_has_card_metrics_and_sparse_int8_graphs(smoke_model: Path) -> None:
    card = yaml.safe_load((smoke_model / "package" / "card.yaml").read_text())
    assert set(card["files"]) == {"encoder.tflite", "predictor.tflite", "joiner.tflite", "tokens.json",
                                  "vocabulary.txt"}
    # The vocabulary is every word of the training text, and the runtime loads it with the model.
    train_words = {w for line in (smoke_model / "text-train.jsonl").read_text().splitlines()
                   for w in json.loads(line)["text"].split()}
    assert (smoke_model / "package" / "vocabulary.txt").read_text().split() == sorted(train_words)
    vocabulary = Recognizer.load(smoke_model / "package").vocabulary
    assert vocabulary is not None and len(vocabulary) == len(train_words)
    evaluation = card["evaluation"]
    assert evaluation["zero_fraction"] >= 0.5
    assert evaluation["scores"]["condition"]["clean"]["utterances"] > 0
    assert evaluation["parity"]["utterances"] > 0
    assert card["training"]["command"].startswith("python -m training.recipe")
    assert card["training"]["train_steps"] == 12  # the smoke config's steps (its time budget is never reached)
    # The config asks for bfloat16 products; a CPU without bfloat16 arithmetic trains in float32 and says so.
    trained = json.loads((smoke_model / "checkpoints" / "config.json").read_text())["train"]
    assert trained["bf16"] is bf16_supported()
    norm = card["model"]["mean_norm"]  # the feature normalisation the runtime applies, as the shipped recipe
    assert norm["frames"] == 150 and len(norm["initial_mean"]) == 40


def test_transcribe_decodes_with_the_smoke_model_and_reports_bad_files(smoke_model: Path, tmp_path: Path) -> None:
    wav = next((smoke_model / "speech-test" / "clean").glob("*.wav"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "transcribe", "--json", "--model", str(smoke_model / "package"),
         str(bad), str(wav)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1  # one file failed, the other was still decoded
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["file"] == str(bad) and "error" in lines[0]
    decoded = lines[1]
    assert decoded["file"] == str(wav)
    assert isinstance(decoded["text"], str) and decoded["nbest"]
    assert decoded["nbest"][0]["text"] == decoded["text"]
    assert decoded["timing"]["audio_s"] > 0.5
    assert "bad.wav" in result.stderr


def test_runtime_refuses_a_tampered_graph_naming_it(smoke_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(smoke_model / "package", model)
    data = bytearray((model / "joiner.tflite").read_bytes())
    data[-1] ^= 0xFF
    (model / "joiner.tflite").write_bytes(bytes(data))
    wav = next((smoke_model / "speech-test" / "clean").glob("*.wav"))
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "transcribe", "--model", str(model), str(wav)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "joiner.tflite: sha256" in result.stderr

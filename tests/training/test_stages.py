"""The recogniser recipe's synthesis plan: which voices speak which sentences."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from training import stages
from training.recipe import Context
from training.voices import Voice


def _context(tmp_path: Path, synth: dict[str, object]) -> Context:
    voices = {
        "train": [Voice("espeak", "en-us", "espeak/en-us"), Voice("kokoro", "af_heart", "kokoro/en-US")],
        "test": [Voice("espeak", "en+m3", "espeak/en"), Voice("kokoro", "bm_lewis", "kokoro/en-GB")],
    }
    (tmp_path / "voices.json").write_text(json.dumps({k: [v.to_dict() for v in vs] for k, vs in voices.items()}))
    for split in ("train", "test"):
        stages.write_jsonl(tmp_path / f"text-{split}.jsonl", [{"text": f"call number {i}"} for i in range(400)])
    config = {"name": "t", "seed": 3, "synth": {"speed": [0.9, 1.1], "pitch": [0.9, 1.1], **synth}}
    return Context(config, tmp_path, tmp_path)


def _engines(ctx: Context, split: str) -> Counter[str]:
    return Counter(voice["engine"] for _, voice in stages._plan(ctx, split))


def test_test_engine_weights_change_only_the_test_draws(tmp_path: Path) -> None:
    ctx = _context(tmp_path, {"engine_weights": {"espeak": 0.9, "kokoro": 0.1},
                              "test_engine_weights": {"kokoro": 0.9, "espeak": 0.1}})
    train, test = _engines(ctx, "train"), _engines(ctx, "test")
    assert 0.03 < train["kokoro"] / 400 < 0.2
    assert 0.8 < test["kokoro"] / 400 < 0.97
    plain = _context(tmp_path, {"engine_weights": {"espeak": 0.9, "kokoro": 0.1}})
    assert _engines(plain, "train") == train  # the same draws without the test override
    assert 0.03 < _engines(plain, "test")["kokoro"] / 400 < 0.2


def test_plan_is_reproducible_and_names_the_voice(tmp_path: Path) -> None:
    ctx = _context(tmp_path, {})
    first, again = stages._plan(ctx, "train"), stages._plan(ctx, "train")
    assert first == again
    row, voice = first[0]
    assert row["id"] == "train-000000" and row["engine"] == voice["engine"] and row["voice"] == voice["name"]
    assert 0.9 <= row["speed"] <= 1.1 and 0.9 <= row["pitch"] <= 1.1

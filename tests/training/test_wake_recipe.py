"""The wake-word recipe: its pieces, and its smoke configuration end to end for a custom phrase.

The end-to-end run trains "hey computer" from text alone with ``training/configs/wake-smoke.yaml`` (espeak-ng
only, a few dozen clips and training steps: about a minute and a half on two cores), then checks that the
model directory has its card, that the daemon's detector and ``harkd wake`` load it, and that a second run
skips every stage.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from training import wake_data
from training.recipe import Context, run_stages

REPO = Path(__file__).resolve().parents[2]


# --- pieces ------------------------------------------------------------------------------------------------

def test_confusables_never_hold_the_phrase_and_cover_its_words() -> None:
    texts = wake_data.confusable_texts("hey jarvis", ["hey travis", "Hey, Jarvis!"])
    assert "hey jarvis" not in texts  # a hand-written list that slips the phrase in is cleaned
    assert "hey travis" in texts and "hey marvin" in texts  # hand-written and other names
    assert "hey barvis" in texts  # a sound-alike of the last word
    assert "ask jarvis to call me back" in texts  # the word inside another sentence
    assert "hey" in texts  # the first word alone
    computer = wake_data.confusable_texts("hey computer")
    assert "hey computer" not in computer and "hey jarvis" in computer


def test_sound_alikes_replace_the_leading_consonants() -> None:
    alikes = wake_data.sound_alikes("jarvis")
    assert {"barvis", "marvis", "tarvis", "charvis"} <= set(alikes) and "jarvis" not in alikes
    assert "bomputer" in wake_data.sound_alikes("computer")
    assert wake_data.sound_alikes("hmm") == []


def test_phrase_normalisation_and_slug() -> None:
    assert wake_data.normalise_phrase("  Hey, COMPUTER! ") == "hey computer"
    assert wake_data.slug("hey computer") == "hey-computer"
    with pytest.raises(ValueError, match="no words"):
        wake_data.normalise_phrase("?!")


def test_split_by_hash_is_disjoint_and_order_free() -> None:
    items = [f"sentence {i}" for i in range(50)]
    train, test = wake_data.split_by_hash(items, 0.3, seed=1)
    assert not set(train) & set(test) and len(test) == 15 and len(train) == 35
    assert wake_data.split_by_hash(reversed(items), 0.3, seed=1) == (train, test)


def test_end_frame_is_the_first_frame_that_reaches_the_sample() -> None:
    from daemon.frontend import Frontend

    frontend = Frontend()
    assert wake_data.end_frame(400, frontend) == 0  # frame 0 covers samples 0..399
    assert wake_data.end_frame(401, frontend) == 1
    assert wake_data.end_frame(16000, frontend) == 98  # 98 * 160 + 400 = 16080 >= 16000


def test_recipe_config_for_another_phrase(tmp_path: Path) -> None:
    from training.wake_recipe import positive_variants, recipe_config

    config = recipe_config(REPO / "training" / "configs" / "wake.yaml", None)
    assert config["phrase"] == "hey jarvis" and config["confusables"]
    assert config["command"] == "python -m training.wake_recipe --config training/configs/wake.yaml"
    other = recipe_config(REPO / "training" / "configs" / "wake.yaml", "Hey Computer")
    assert other["phrase"] == "hey computer" and other["name"] == "wake-hey-computer"
    assert other["confusables"] == []  # written for "hey jarvis"
    assert other["command"].endswith("--phrase 'hey computer'")
    assert positive_variants("hey computer") == ["hey computer", "hey computer.", "hey computer!",
                                                 "hey, computer."]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(ValueError, match="phrase"):
        recipe_config(bad, None)


def test_windows_before_a_scene_start_hold_the_fill_value() -> None:
    pytest.importorskip("torch", reason="training extra (torch) not installed")
    from training.wake_model import FILL_VALUE, SceneFeatures

    feats = np.arange(10 * 40, dtype=np.float32).reshape(10, 40)
    data = SceneFeatures.build([("positive", feats, 5), ("command", feats + 1, -1)])
    window = data.window(0, 3, 6, FILL_VALUE)
    assert np.all(window[:2] == FILL_VALUE) and np.array_equal(window[2:], feats[:4])
    assert np.array_equal(data.window(1, 9, 4, FILL_VALUE), feats[6:] + 1)


def test_hard_negative_mining_finds_the_windows_the_model_fires_on() -> None:
    torch = pytest.importorskip("torch", reason="training extra (torch) not installed")
    from training.wake_model import SceneFeatures, WakeModelConfig, WakeTrainConfig, WindowSampler, mine_hard_negatives

    class LastFrameLoud(torch.nn.Module):  # a stand-in model: fires when the window's last frame is loud
        def __init__(self) -> None:
            super().__init__()
            self.cfg = WakeModelConfig(window_frames=8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, -1, :].mean(dim=1) + 5.0) * 4.0

    quiet = np.full((60, 40), -10.0, dtype=np.float32)
    loud_end = quiet.copy()
    loud_end[50:] = 0.0
    data = SceneFeatures.build([("positive", quiet, 30), ("command", quiet, -1), ("music", loud_end, -1)])
    cfg = WakeTrainConfig(mine_stride=2, mine_min_score=0.5, hard_share=1.0, partial_share=0.0, freq_mask=0,
                          time_mask=0)
    model = LastFrameLoud()
    sampler = WindowSampler(data, model.cfg, cfg, np.random.default_rng(0))
    hard = mine_hard_negatives(model, data, sampler, cfg)  # type: ignore[arg-type]
    assert len(hard) == 5 and set(hard[:, 0]) == {2}  # the music scene only: ends 51, 53, ..., 59
    assert sorted(hard[:, 1]) == [51, 53, 55, 57, 59]
    sampler.hard = hard
    xs, ys = sampler.batch(64)
    negatives = xs[ys < 0.5]
    # Every negative window now comes from the mined ones (hard_share 1), ending within 2 frames of one: all
    # but those jittered to end 49 (before the loud stretch; about 4%) end loud. Drawn as before, about
    # half of them (the other negative scene is quiet throughout) would.
    loud_last = np.mean([window[-1].max() == 0.0 for window in negatives])
    assert len(negatives) > 30 and loud_last > 0.8


def test_false_accepts_are_traced_to_the_clip_they_fired_on() -> None:
    from daemon.wake import Detection
    from training.wake_recipe import _false_accepts_by_text

    clips = [{"text": "hey travis", "start": 0, "end": 16000},
             {"text": "ask jarvis for the keys", "start": 40000, "end": 72000}]
    found = [Detection("hey jarvis", 0.9, end) for end in (15000, 50000, 71000, 80000, 200000)]
    assert _false_accepts_by_text(found, clips) == [
        ("ask jarvis for the keys", 3), ("hey travis", 1), ("(between clips)", 1)]  # 80000: within a second


def test_folded_export_graph_matches_the_trained_models() -> None:
    torch = pytest.importorskip("torch", reason="training extra (torch) not installed")
    from training.wake_model import WakeGraph, WakeModelConfig, WakeNet, float_scores

    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = WakeNet(WakeModelConfig(channels=16))
        model.train()
        for _ in range(3):  # move the batch-norm statistics away from their initial values
            model(torch.randn(8, 128, 40) * 3)
        model.eval()
        members.append(model)
    feats = torch.randn(4, 128, 40)
    with torch.no_grad():
        logits = [m(feats) for m in members]
        one = WakeGraph(members[:1])(feats)["score"][:, 0]
        both = WakeGraph(members)(feats)["score"][:, 0]
    assert torch.allclose(torch.sigmoid(logits[0]), one, atol=1e-5)
    assert torch.allclose(torch.sigmoid((logits[0] + logits[1]) / 2), both, atol=1e-5)  # logits averaged
    assert not torch.allclose(one, both, atol=1e-3)
    assert np.allclose(float_scores(members, feats.numpy()), both.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        WakeGraph([])


def test_calibrated_threshold_is_the_most_sensitive_that_keeps_within_the_budget() -> None:
    from training.wake_recipe import choose_threshold

    def sweep(*per_hour: float) -> list[dict[str, float]]:
        return [{"threshold": round(0.5 + 0.1 * i, 1), "false_accepts_per_hour": v} for i, v in enumerate(per_hour)]

    assert choose_threshold(sweep(2.0, 0.5, 0.2, 0.0, 0.0), 0.25) == 0.7
    assert choose_threshold(sweep(0.1, 0.5, 0.2, 0.0, 0.0), 0.25) == 0.7  # within budget only below a failure
    assert choose_threshold(sweep(0.0, 0.0, 0.0, 0.0, 0.0), 0.25) == 0.5
    assert choose_threshold(sweep(3.0, 2.0, 1.0, 1.0, 1.0), 0.25) == 0.9  # none is: the least sensitive tried


def test_shared_stage_runner_takes_another_table(tmp_path: Path) -> None:
    ran: list[str] = []
    table = (
        (1, "first", ("a",), lambda ctx: ran.append("first")),
        (2, "second", ("b",), lambda ctx: ran.append("second")),
    )
    ctx = Context(config={"name": "t", "a": 1, "b": 2}, work=tmp_path, repo=REPO)
    run_stages(ctx, {1, 2}, False, table)
    run_stages(ctx, {1, 2}, False, table)  # up to date: skipped
    assert ran == ["first", "second"]
    changed = Context(config={"name": "t", "a": 5, "b": 2}, work=tmp_path, repo=REPO)
    run_stages(changed, {1, 2}, False, table)  # stage 1's settings changed: it and everything after re-run
    assert ran == ["first", "second", "first", "second"]
    assert (tmp_path / "02-second.done").is_file()


# --- end to end ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="training extra (torch) not installed")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (packaging/install-system-deps.sh installs it)")
    work = tmp_path_factory.mktemp("wake-recipe")
    cmd = [sys.executable, "-m", "training.wake_recipe", "--config", "training/configs/wake-smoke.yaml",
           "--phrase", "hey computer", "--work", str(work), "--install", str(work / "installed")]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=900)
    again = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    assert again.stderr.count("up to date, skipped") == 9
    return work / "wake-smoke-hey-computer"


def test_custom_phrase_package_has_card_and_metrics(smoke_model: Path) -> None:
    from daemon.modelcard import load_card

    package = smoke_model / "package"
    card = load_card(package)  # every sha256 checked
    assert card.kind == "wake" and card.model["phrase"] == "hey computer"
    assert card.name == "harkd-wake-smoke-hey-computer"
    assert set(card.files) == {"wake.tflite"}
    assert (package / "README.md").read_text().startswith("# harkd-wake-smoke-hey-computer")
    evaluation = card.details["evaluation"]
    assert set(evaluation["at_threshold"]["false_reject_percent"]) == {"clean", "noise_10db"}
    assert set(evaluation["at_threshold"]["false_reject_percent_by_engine"]) == {"espeak"}  # the smoke voices
    assert sum(evaluation["at_threshold"]["positives_by_engine"].values()) == sum(
        evaluation["at_threshold"]["positives"].values())
    assert evaluation["at_threshold"]["negative_hours"] > 0
    assert evaluation["parity"]["mean_abs_diff"] < 0.05
    assert evaluation["cpu_seconds_per_audio_second_1_thread"] > 0
    calibration = evaluation["calibration"]  # the threshold comes from calibration speech, not the test set
    assert calibration["clips"] == {"command": 6, "general": 4} and calibration["hours"] > 0
    assert card.model["threshold"] == calibration["threshold"] == evaluation["at_threshold"]["threshold"]
    assert card.details["training"]["steps"] == [40, 40]  # two members, one graph
    assert card.model["members"] == 2
    assert card.details["training"]["command"].endswith("--phrase 'hey computer'")
    texts = json.loads((smoke_model / "texts.json").read_text())
    assert "a jar of jam" not in texts["confusable"]["train"] + texts["confusable"]["test"]  # written for jarvis
    manifest = json.loads((smoke_model / "test" / "manifest.json").read_text())
    spoken = {row["kind"]: row for row in manifest["negative"] if row.get("clips")}
    assert "confusable" in spoken and "command" in spoken
    for row in spoken.values():
        ends = [0] + [c["end"] for c in row["clips"]]
        assert all(c["start"] >= ends[i] and c["end"] > c["start"] for i, c in enumerate(row["clips"]))
        assert ends[-1] <= row["seconds"] * 16000
    assert set(c["text"] for c in spoken["confusable"]["clips"]) <= set(texts["confusable"]["test"])
    installed = load_card(smoke_model.parent / "installed")
    assert installed.files == card.files


def test_daemon_detector_and_harkd_wake_run_the_custom_model(smoke_model: Path) -> None:
    from daemon.audiofile import read_audio
    from daemon.wake import WakeDetector, WakeSettings

    manifest = json.loads((smoke_model / "test" / "manifest.json").read_text())
    wav = smoke_model / manifest["positive"][0]["path"]
    detector = WakeDetector.load(smoke_model / "package", WakeSettings(threshold=0.05, smoothing=1))
    detector.trace = []
    detector.process(read_audio(wav))
    assert detector.trace and all(0.0 <= s <= 1.0 for _, s in detector.trace)
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "wake", "--json", "--model", str(smoke_model / "package"), str(wav)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["phrase"] == "hey computer" and isinstance(line["detections"], list)
    card = yaml.safe_load((smoke_model / "package" / "card.yaml").read_text())
    assert card["model"]["window_frames"] == 128

"""The wake-word detector: clock-free smoothing, threshold and refractory period; streaming that does not
depend on chunk sizes; the pipeline trigger; the shipped model and ``harkd wake``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
import yaml

from daemon.audio import AudioChunk
from daemon.config import WakeConfig
from daemon.modelcard import CARD_NAME, ModelError, sha256_file
from daemon.paths import SOURCE_MODELS
from daemon.trigger import Trigger
from daemon.wake import (
    DetectionLogic,
    WakeDetector,
    WakeModel,
    WakeSettings,
    WakeTrigger,
    detections_from_scores,
)

RATE = 16000
REPO = Path(__file__).resolve().parents[2]
SHIPPED = SOURCE_MODELS / "wake"
FILL = float(np.log(np.float32(1e-6)))


class LoudnessScorer:
    """A real scorer without a model: 1.0 when the newest ``recent`` frames are all loud (a stand-in keyword)."""

    def __init__(self, window_frames: int = 32, stride_frames: int = 4, recent: int = 8, level: float = 0.0) -> None:
        self.window_frames = window_frames
        self.stride_frames = stride_frames
        self.fill_value = FILL
        self.phrase = "tone"
        self.recent = recent
        self.level = level

    def score(self, window: npt.NDArray[np.float32]) -> float:
        if window.shape != (self.window_frames, 40):
            raise ValueError(f"window shape {window.shape}")
        loud = window[-self.recent:].max(axis=1) > self.level  # the loudest mel band of each frame
        return float(loud.mean())


def quiet(seconds: float, seed: int = 0) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=round(seconds * RATE)) * 20).astype(np.int16)


def tone(seconds: float, hz: float = 1000.0) -> npt.NDArray[np.int16]:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def feed(detector: WakeDetector, audio: npt.NDArray[np.int16], chunk: int, start: int = 0) -> list[tuple[int, float]]:
    found = []
    for i in range(0, len(audio), chunk):
        found += [(d.end, d.score) for d in detector.process(audio[i:i + chunk], start + i)]
    return found


# --- pure decision logic -------------------------------------------------------------------------------

def test_logic_averages_the_last_scores_before_the_threshold() -> None:
    logic = DetectionLogic(WakeSettings(threshold=0.7, smoothing=3, refractory_ms=0))
    assert logic.update(1.0, 1) is None  # fewer than 3 scores so far
    assert logic.update(1.0, 2) is None
    assert logic.update(0.0, 3) is None  # 1, 1, 0 -> 0.67 < 0.7
    assert logic.update(1.0, 4) is None  # 1, 0, 1
    assert logic.update(1.0, 5) is None  # 0, 1, 1
    assert logic.update(1.0, 6) == pytest.approx(1.0)  # 1, 1, 1


def test_logic_refractory_period_counts_samples_and_survives_restart() -> None:
    settings = WakeSettings(threshold=0.5, smoothing=1, refractory_ms=1000)
    logic = DetectionLogic(settings)
    assert logic.update(0.9, 16000) == pytest.approx(0.9)
    assert logic.update(0.9, 16000 + 15999) is None  # 999.9 ms later
    logic.restart()  # audio went missing: the same phrase must not fire again
    assert logic.update(0.9, 16000 + 8000) is None
    assert logic.update(0.9, 32000) == pytest.approx(0.9)  # exactly 1000 ms later
    logic.restart(keep_refractory=False)  # a new clock (another file)
    assert logic.update(0.8, 100) == pytest.approx(0.8)


def test_logic_needs_a_fresh_run_of_scores_after_firing() -> None:
    logic = DetectionLogic(WakeSettings(threshold=0.5, smoothing=2, refractory_ms=0))
    fired = [logic.update(1.0, p) for p in range(1, 7)]
    assert fired == [None, 1.0, None, 1.0, None, 1.0]


def test_settings_validate_and_come_from_the_config() -> None:
    with pytest.raises(ValueError, match="threshold"):
        WakeSettings(threshold=1.0)
    with pytest.raises(ValueError, match="smoothing"):
        WakeSettings(smoothing=0)
    with pytest.raises(ValueError, match="refractory"):
        WakeSettings(refractory_ms=-1)
    settings = WakeSettings.from_config(WakeConfig(threshold=0.55, smoothing_frames=3, refractory_ms=1500), 0.8)
    assert settings == WakeSettings(threshold=0.55, smoothing=3, refractory_ms=1500)  # the config's, when set
    assert settings.refractory_samples == 24000
    assert WakeConfig().threshold is None  # by default: the threshold calibrated for the model
    assert WakeSettings.from_config(WakeConfig(), 0.8).threshold == 0.8


# --- streaming ------------------------------------------------------------------------------------------

AUDIO = np.concatenate([quiet(1.0), tone(0.5), quiet(3.0, seed=1), tone(0.5), quiet(0.5, seed=2)])
SETTINGS = WakeSettings(threshold=0.9, smoothing=3, refractory_ms=1000)


@pytest.mark.parametrize("chunk", [160, 333, 1280, 16000, len(AUDIO)])
def test_detections_do_not_depend_on_chunk_size(chunk: int) -> None:
    reference = feed(WakeDetector(LoudnessScorer(), SETTINGS), AUDIO, 320)
    assert feed(WakeDetector(LoudnessScorer(), SETTINGS), AUDIO, chunk) == reference
    assert len(reference) == 2


def test_detection_positions_come_from_sample_counts() -> None:
    found = feed(WakeDetector(LoudnessScorer(), SETTINGS), AUDIO, 320)
    first, second = (end for end, _ in found)
    # Scores are taken every 4 frames: the last frame seen ends at (4k - 1) * hop + window samples.
    for end in (first, second):
        assert (end - 400 + 160) % (4 * 160) == 0
    assert 16000 < first < 16000 + 0.3 * RATE  # shortly after the tone began
    assert abs(second - first - round(3.5 * RATE)) < 4 * 160  # the same tone 3.5 s later, within a stride
    shifted = feed(WakeDetector(LoudnessScorer(), SETTINGS), AUDIO, 320, start=48000)
    assert [end for end, _ in shifted] == [first + 48000, second + 48000]


def test_stream_start_is_filled_like_digital_silence() -> None:
    scorer = LoudnessScorer(recent=32, level=-20.0)  # needs the whole ring above -20: the fill is -13.8
    detector = WakeDetector(scorer, WakeSettings(threshold=0.5, smoothing=1, refractory_ms=0))
    assert detector.process(tone(0.1)) != []  # the ring's unfilled frames hold the fill value (-13.8 > -20)


def test_a_gap_restarts_the_stream() -> None:
    detector = WakeDetector(LoudnessScorer(), SETTINGS)
    before = np.concatenate([quiet(1.0), tone(0.05)])
    assert feed(detector, before, 320) == []
    # The rest of the tone arrives after audio went missing: it alone is too short to fire.
    assert feed(detector, tone(0.05), 320, start=len(before) + 8000) == []
    assert detector.position == len(before) + 8000 + 800
    assert feed(detector, tone(0.5), 320, start=detector.position) != []


def test_replaying_a_trace_gives_the_live_detections() -> None:
    detector = WakeDetector(LoudnessScorer(), SETTINGS)
    detector.trace = []
    live = feed(detector, AUDIO, 320)
    replayed = detections_from_scores(detector.trace, SETTINGS, "tone")
    assert [(d.end, d.score) for d in replayed] == live
    assert detector.scores == len(detector.trace) > 100


def test_rejects_non_int16_audio() -> None:
    with pytest.raises(TypeError, match="int16"):
        WakeDetector(LoudnessScorer()).process(np.zeros(160, dtype=np.float32))


# --- the pipeline's trigger -------------------------------------------------------------------------------

def run_trigger(trigger: WakeTrigger, audio: npt.NDArray[np.int16], chunk: int,
                start: int = 0) -> list[tuple[int, int]]:
    events = []
    for i in range(0, len(audio), chunk):
        event = trigger.process(AudioChunk(audio[i:i + chunk].copy(), start + i))
        if event is not None:
            events.append((event.end, event.utterance_start))
    return events


def test_trigger_fires_once_with_pre_roll_until_reset() -> None:
    settings = WakeSettings(threshold=0.9, smoothing=3, refractory_ms=0)
    trigger = WakeTrigger(WakeDetector(LoudnessScorer(), settings), pre_roll_ms=300, name="tone-model")
    assert trigger.name == "tone-model"
    events = run_trigger(trigger, AUDIO, 320)
    assert len(events) == 1  # quiet after firing
    end, start = events[0]
    assert start == end - 300 * 16
    trigger.reset()
    later = run_trigger(trigger, np.concatenate([quiet(0.5), tone(0.5)]), 320, start=len(AUDIO) + 16000)
    assert len(later) == 1 and later[0][0] > len(AUDIO) + 16000 + 8000


def test_wake_trigger_is_a_pipeline_trigger() -> None:
    trigger: Trigger = WakeTrigger(WakeDetector(LoudnessScorer()))  # mypy checks the protocol
    assert trigger.name == "wake" and trigger.process(AudioChunk(quiet(0.1), 0)) is None
    with pytest.raises(ValueError, match="pre_roll_ms"):
        WakeTrigger(WakeDetector(LoudnessScorer()), pre_roll_ms=-1)


def test_trigger_pre_roll_stops_at_zero() -> None:
    settings = WakeSettings(threshold=0.9, smoothing=1, refractory_ms=0)
    trigger = WakeTrigger(WakeDetector(LoudnessScorer(), settings), pre_roll_ms=1000)
    assert run_trigger(trigger, tone(0.3), 320)[0][1] == 0


# --- model directories -----------------------------------------------------------------------------------

def _card(directory: Path, **changes: object) -> None:
    card = yaml.safe_load((directory / CARD_NAME).read_text())
    card.update(changes)
    (directory / CARD_NAME).write_text(yaml.safe_dump(card))


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    if not (SHIPPED / CARD_NAME).is_file():
        pytest.skip("no shipped wake model in models/wake (python -m training.wake_recipe ... --install)")
    copy = tmp_path / "wake"
    shutil.copytree(SHIPPED, copy)
    return copy


def test_model_directory_errors_name_the_problem(model_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model card"):
        WakeModel(tmp_path)
    model = WakeModel(model_copy)
    assert model.phrase == "hey jarvis" and model.window_frames > model.stride_frames >= 1
    card = yaml.safe_load((model_copy / CARD_NAME).read_text())
    assert model.threshold == card["model"]["threshold"]  # calibrated by the recipe (stage 7)
    _card(model_copy, model={**card["model"], "threshold": 1.5})
    with pytest.raises(ModelError, match="threshold"):
        WakeModel(model_copy)
    _card(model_copy, model={k: v for k, v in card["model"].items() if k != "threshold"})
    assert WakeModel(model_copy).threshold == 0.6  # a card from before calibration
    _card(model_copy, kind="recognizer")
    with pytest.raises(ModelError, match="not 'wake'"):
        WakeModel(model_copy)
    _card(model_copy, kind="wake")
    data = bytearray((model_copy / "wake.tflite").read_bytes())
    data[-1] ^= 0xFF
    (model_copy / "wake.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"wake\.tflite: sha256"):
        WakeModel(model_copy)


def test_model_refuses_other_front_end_settings(model_copy: Path) -> None:
    card = yaml.safe_load((model_copy / CARD_NAME).read_text())
    _card(model_copy, frontend={**card["frontend"], "n_mels": 64})
    with pytest.raises(ModelError, match="front-end"):
        WakeModel(model_copy)


def _espeak(text: str, path: Path) -> npt.NDArray[np.int16]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (packaging/install-system-deps.sh installs it)")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
    audio, rate = sf.read(path, dtype="int16")
    from daemon.resample import resample

    return np.clip(resample(audio.astype(np.float32), rate, RATE), -32768, 32767).astype(np.int16)


def test_shipped_model_hears_the_phrase_and_not_other_speech(model_copy: Path, tmp_path: Path) -> None:
    model = WakeModel(model_copy)
    detector = WakeDetector(model, WakeSettings(threshold=model.threshold))
    phrase = _espeak("hey jarvis", tmp_path / "phrase.wav")
    audio = np.concatenate([quiet(1.0), phrase, quiet(1.5, seed=3)])
    found = detector.process(audio)
    phrase_end = RATE + len(phrase)
    assert len(found) == 1 and RATE < found[0].end <= phrase_end + RATE
    detector.restart(0)
    other = _espeak("please turn on the kitchen lights and set a timer for ten minutes", tmp_path / "other.wav")
    assert detector.process(np.concatenate([quiet(0.5), other, quiet(1.0)])) == []


def test_harkd_wake_reports_each_file_and_unreadable_ones(model_copy: Path, tmp_path: Path) -> None:
    phrase = _espeak("hey jarvis", tmp_path / "phrase.wav")
    good = tmp_path / "good.wav"
    sf.write(good, np.concatenate([quiet(1.0), phrase, quiet(1.5)]), RATE, subtype="PCM_16")
    silent = tmp_path / "silent.flac"
    sf.write(silent, quiet(2.0), RATE)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF but not audio")
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "wake", "--json", "--model", str(model_copy), str(good), str(bad),
         str(silent)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(good), str(bad), str(silent)]
    assert len(lines[0]["detections"]) == 1 and 1.0 < lines[0]["detections"][0]["time"] < 4.0
    assert 0.0 < lines[0]["detections"][0]["score"] <= 1.0 and lines[0]["phrase"] == "hey jarvis"
    assert lines[0]["threshold"] == WakeModel(model_copy).threshold  # the card's calibrated one by default
    override = subprocess.run([sys.executable, "-m", "daemon.cli", "wake", "--json", "--threshold", "0.97",
                               "--model", str(model_copy), str(silent)], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
    assert json.loads(override.stdout)["threshold"] == 0.97
    assert "error" in lines[1] and "bad.wav" in result.stderr
    assert lines[2]["detections"] == [] and lines[2]["audio_s"] == 2.0
    text = subprocess.run([sys.executable, "-m", "daemon.cli", "wake", "--model", str(model_copy), str(good)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "'hey jarvis' at" in text.stdout
    assert sha256_file(model_copy / "wake.tflite") == yaml.safe_load((model_copy / CARD_NAME).read_text())[
        "files"]["wake.tflite"]


def test_harkd_wake_refuses_a_missing_model(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "daemon.cli", "wake", "--model", str(tmp_path), "x.wav"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no model card" in result.stderr

"""The pipeline, fed audio directly: trigger, end-pointers, lattices, resets, ducking, bias, metrics, watchdog.

Most tests drive a real :class:`~daemon.recognizer.Recognizer` whose backend is scripted: an encoder frame
is "loud" when its log-mel features are, and the joiner emits the next letter of a script on each loud
frame. So the words follow the audio the way a trained model's do, and the pipeline's timing can be
checked to the frame. The last tests run the real TFLite model through a file source.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from recognizer_model import SAMPLE_UTTERANCES

from daemon.audio import AudioChunk, FileSource, SourceStats
from daemon.bias import BiasGraphCache
from daemon.config import WakeConfig
from daemon.endpoint import EndPointer, EndpointPair
from daemon.frontend import Frontend
from daemon.lattice import Lattice
from daemon.messages import BiasSet, MediaDuck, Metrics, Reset, Wake, validate_payload
from daemon.pipeline import BiasStore, Pipeline, PipelineSettings
from daemon.recognizer import BiasState, Recognizer
from daemon.systemd_notify import Notifier
from daemon.textnorm import ALPHABET
from daemon.tokens import TokenTable
from daemon.trigger import VadTrigger
from daemon.wake import WakeTrigger

RATE = 16000
TOKENS = TokenTable.from_alphabet(ALPHABET)
DEVICE = "test-device"
SAMPLES = Path(__file__).resolve().parents[2] / "daemon" / "samples"


# ------------------------------------------------------------------------------------------ helpers


class LoudnessBackend:
    """A transducer backend: ``subsampling`` feature frames make one encoder frame, loud when their
    log-mel maximum is above 0; the joiner emits the next letter of ``script`` on each loud frame.

    An encoder frame carries (loud, loud frames before it); the predictor output carries the labels a
    hypothesis has. So the joiner knows whether a hypothesis is behind the script (emit its next letter)
    or up to date (blank), like the scripted backend of test_recognizer.py.
    """

    def __init__(self, script: str, chunk_features: int = 6, subsampling: int = 6) -> None:
        self.ids = TOKENS.encode(script)
        self.chunk_features = chunk_features
        self.subsampling = subsampling
        self.frame_shift_s = 0.01 * subsampling

    def initial_encoder_state(self) -> np.ndarray:
        return np.zeros(1, dtype=np.float32)  # loud frames so far

    def encode(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loud = feats.reshape(-1, self.subsampling, feats.shape[1]).max(axis=2).mean(axis=1) > 0
        before = state[0] + np.concatenate([[0], np.cumsum(loud)[:-1]])
        enc = np.stack([loud.astype(np.float32), before.astype(np.float32)], axis=1)
        return enc, np.array([state[0] + loud.sum()], dtype=np.float32)

    def initial_predictor_state(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(1, dtype=np.float32), np.zeros(1, dtype=np.float32)

    def predict(self, token: int, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        emitted = h + (token != 0)
        return emitted.copy(), emitted, c

    def join(self, enc: np.ndarray, preds: np.ndarray) -> np.ndarray:
        due = min(len(self.ids), int(enc[1] + enc[0]))  # labels the script has reached after this frame
        logits = np.full((len(preds), len(TOKENS)), -8.0, dtype=np.float32)
        for i, pred in enumerate(preds):
            done = int(pred[0])
            logits[i, self.ids[done] if done < due else 0] = 8.0
        return logits


def scripted(script: str, **backend: int) -> Recognizer:
    return Recognizer(LoudnessBackend(script, **backend), TOKENS, Frontend())


def quiet(seconds: float, seed: int = 0) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=round(seconds * RATE)) * 30).astype(np.int16)  # about -60 dBFS


def voiced(seconds: float) -> npt.NDArray[np.int16]:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = np.sum([np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8)], axis=0)
    return (0.15 * 32767 * wave / 2).astype(np.int16)


def audio(*parts: tuple[str, float]) -> npt.NDArray[np.int16]:
    """``("q", 0.5), ("v", 1.0)``: quiet and voiced stretches, in seconds."""
    return np.concatenate([voiced(s) if kind == "v" else quiet(s, i) for i, (kind, s) in enumerate(parts)])


class RecordingSink:
    """An :class:`~daemon.pipeline.EventSink` that keeps every message in order (after a schema check)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []

    def publish_wake(self, wake: Wake) -> None:
        validate_payload("wake", wake.to_dict())
        self.messages.append(("wake", wake))

    def publish_lattice(self, lattice: Lattice) -> None:
        self.messages.append(("lattice", Lattice.from_json(lattice.to_json())))  # validates the schema

    def publish_reset(self, reset: Reset) -> None:
        validate_payload("reset", reset.to_dict())
        self.messages.append(("reset", reset))

    def publish_media_duck(self, duck: MediaDuck) -> None:
        validate_payload("media_duck", duck.to_dict())
        self.messages.append(("duck", duck))

    def publish_metrics(self, metrics: Metrics) -> None:
        validate_payload("metrics", metrics.to_dict())
        self.messages.append(("metrics", metrics))

    def kinds(self) -> list[str]:
        out = []
        for kind, message in self.messages:
            if kind == "lattice":
                out.append(f"{message.kind}:{message.seq}")
            elif kind == "reset":
                out.append(f"reset:{message.speculative_seq}:{message.reason}")
            elif kind == "duck":
                out.append("duck:on" if message.duck else "duck:off")
            elif kind != "metrics":
                out.append(kind)
        return out

    def of(self, kind: str) -> list[Any]:
        return [m for k, m in self.messages if k == kind]


def endpoints(final_silence_ms: int = 600, lead_ms: int = 200, min_speech_ms: int = 200,
              max_utterance_ms: int = 10_000, no_speech_ms: int = 4000) -> Any:
    return lambda: EndpointPair(EndPointer(final_silence_ms, min_speech_ms, max_utterance_ms,
                                           no_speech_ms=no_speech_ms), lead_ms=lead_ms)


def make_pipeline(recognizer: Recognizer, sink: RecordingSink, *, pre_roll_ms: int = 300, **ep: int) -> Pipeline:
    return Pipeline(recognizer, VadTrigger(pre_roll_ms=pre_roll_ms), sink,
                    PipelineSettings(DEVICE, pre_roll_ms=pre_roll_ms, metrics_interval_s=0), endpoints(**ep))


def feed(pipeline: Pipeline, samples: npt.NDArray[np.int16], chunk: int = 320, start: int = 0) -> None:
    for i in range(0, len(samples), chunk):
        pipeline.process_chunk(AudioChunk(samples[i:i + chunk].copy(), start + i))


# ------------------------------------------------------------------------------------------ utterances


def test_one_utterance_wake_speculative_final_and_ducking_in_order() -> None:
    sink = RecordingSink()
    pipeline = make_pipeline(scripted("hi bo"), sink)
    feed(pipeline, audio(("q", 0.5), ("v", 1.0), ("q", 1.5)))
    assert sink.kinds() == ["wake", "duck:on", "speculative:0", "final:1", "duck:off"]
    wake = sink.of("wake")[0]
    speculative, final = sink.of("lattice")
    ids = {wake.utterance_id, speculative.utterance_id, final.utterance_id}
    ids |= {d.utterance_id for d in sink.of("duck")}
    assert len(ids) == 1
    assert wake.time == pytest.approx(0.56, abs=0.011)  # 60 ms of onset after the speech began at 0.5 s
    # Times come from sample counts: the speech ends at 1.5 s; end points 400 and 600 ms later.
    assert final.start_time == pytest.approx(0.2, abs=0.011)  # 300 ms of pre-roll
    assert speculative.end_time == pytest.approx(1.9, abs=0.021)
    assert final.end_time == pytest.approx(2.1, abs=0.021)
    assert final.end_time - speculative.end_time == pytest.approx(0.2, abs=1e-6)
    assert speculative.best.text == final.best.text == "hi bo"  # the same words: no reset
    best_path = next(final.paths())  # the best hypothesis' arcs come first
    words = [(a.word, a.start + final.start_time, a.end + final.start_time) for a in best_path]
    assert [w for w, _, _ in words] == ["hi", "bo"]
    assert all(0.5 <= start < end <= 1.56 for _, start, end in words)  # inside the speech
    assert final.models == {"recognizer": "unversioned", "wake": "vad"}
    assert pipeline.stats.utterances == 1 and pipeline.stats.lattices == 2 and not pipeline.active


def test_speech_resuming_after_the_speculative_end_withdraws_it() -> None:
    sink = RecordingSink()
    pipeline = make_pipeline(scripted("call mum now"), sink)
    # 500 ms pause: past the speculative end point (400 ms), short of the final one (600 ms).
    feed(pipeline, audio(("q", 0.5), ("v", 0.6), ("q", 0.5), ("v", 0.4), ("q", 1.2)))
    assert sink.kinds() == ["wake", "duck:on", "speculative:0", "reset:0:speech_resumed", "speculative:1",
                            "final:2", "duck:off"]
    first, second, final = sink.of("lattice")
    assert first.best.text == "call mum n"  # ten loud frames of 60 ms heard by then
    assert second.best.text == final.best.text == "call mum now"


class LateLetterBackend(LoudnessBackend):
    """Emits the script's last letter at encoder frame ``late_frame`` whatever the audio (a model that
    invents a letter in silence, or a quiet talker the energy detector does not hear)."""

    def __init__(self, script: str, late_frame: int) -> None:
        super().__init__(script)
        self.late_frame = late_frame

    def initial_encoder_state(self) -> np.ndarray:
        return np.zeros(2, dtype=np.float32)  # loud frames so far, frames so far

    def encode(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        enc, loud = super().encode(feats, state[:1])
        index = state[1] + np.arange(len(enc), dtype=np.float32)
        return np.concatenate([enc, index[:, None]], axis=1), np.array([loud[0], state[1] + len(enc)], np.float32)

    def join(self, enc: np.ndarray, preds: np.ndarray) -> np.ndarray:
        due = min(len(self.ids) - 1, int(enc[1] + enc[0]))
        if enc[2] >= self.late_frame:
            due = len(self.ids)
        logits = np.full((len(preds), len(TOKENS)), -8.0, dtype=np.float32)
        for i, pred in enumerate(preds):
            done = int(pred[0])
            logits[i, self.ids[done] if done < due else 0] = 8.0
        return logits


@pytest.mark.parametrize(("after_speech", "label_counts"), [(30, False), (67, True)])
def test_a_late_label_is_speech_only_when_the_microphone_hears_something(after_speech: int,
                                                                         label_counts: bool) -> None:
    # Speech 0.5-1.0 s; the utterance starts at 0.26 s (wake at 0.56 s, less 300 ms of pre-roll), and the
    # last letter comes at its encoder frame 18 (1.08 s in: 1.34 s of audio), 340 ms into the silence.
    # Near silence (about -60 dBFS, under the detector's -55 dBFS floor) after the speech: the letter cannot
    # be speech, and the final end point stays 600 ms after the speech. A faint sound (about -53 dBFS: above
    # that floor, under the detector's threshold) may be a quiet talker: the end point moves to 600 ms after
    # the letter.
    rng = np.random.default_rng(3)
    tail = (rng.normal(size=2 * RATE) * after_speech).astype(np.int16)
    sink = RecordingSink()
    recognizer = Recognizer(LateLetterBackend("hi bo", late_frame=18), TOKENS, Frontend())
    pipeline = make_pipeline(recognizer, sink)
    feed(pipeline, np.concatenate([quiet(0.5), voiced(0.5), tail]))
    final = next(m for m in sink.of("lattice") if m.kind == "final")
    assert final.best.text == "hi bo"
    if label_counts:
        assert final.end_time > 1.75
    else:
        assert final.end_time == pytest.approx(1.6, abs=0.021)


def test_final_words_that_differ_from_the_speculative_ones_bring_a_reset() -> None:
    # A 600 ms encoder chunk: the last words are decoded only after the speculative end point.
    sink = RecordingSink()
    pipeline = make_pipeline(scripted("hello there", chunk_features=60), sink)
    feed(pipeline, audio(("q", 0.5), ("v", 0.5), ("q", 1.2)))
    assert sink.kinds() == ["wake", "duck:on", "speculative:0", "reset:0:final_differs", "final:1",
                            "duck:off"]
    speculative, final = sink.of("lattice")
    assert len(speculative.best.text) < len(final.best.text)
    assert final.best.text.startswith(speculative.best.text)


def test_no_speculation_with_zero_lead() -> None:
    sink = RecordingSink()
    feed(make_pipeline(scripted("ok"), sink, lead_ms=0), audio(("q", 0.5), ("v", 0.5), ("q", 1.0)))
    assert sink.kinds() == ["wake", "duck:on", "final:0", "duck:off"]


def test_long_speech_is_cut_and_the_next_utterance_follows_at_once() -> None:
    sink = RecordingSink()
    pipeline = make_pipeline(scripted("abcdefghijklmnopqrstuvwxyz"), sink, max_utterance_ms=1500)
    feed(pipeline, audio(("q", 0.5), ("v", 1.5), ("q", 1.0)))
    assert sink.kinds() == ["wake", "duck:on", "final:0", "duck:off",  # cut: no speculative lattice
                            "wake", "duck:on", "speculative:0", "final:1", "duck:off"]
    first, second = sink.of("lattice")[0], sink.of("lattice")[2]
    assert first.end_time - first.start_time == pytest.approx(1.5)
    assert second.start_time == pytest.approx(first.end_time)  # pre-roll never reaches into the last one
    assert pipeline.stats.utterances == 2


def test_a_trigger_without_speech_ends_with_an_empty_final_lattice() -> None:
    sink = RecordingSink()
    pipeline = make_pipeline(scripted("x"), sink, no_speech_ms=1000)
    feed(pipeline, audio(("q", 0.5), ("v", 0.1), ("q", 2.0)))  # 100 ms: a knock, too short for speech
    assert sink.kinds() == ["wake", "duck:on", "final:0", "duck:off"]
    final = sink.of("lattice")[0]
    assert final.end_time - final.start_time == pytest.approx(1.0)


def test_missing_audio_ends_the_utterance_and_is_counted() -> None:
    sink = RecordingSink()
    pipeline = make_pipeline(scripted("hey"), sink)
    samples = audio(("q", 0.5), ("v", 1.0))
    feed(pipeline, samples)
    assert pipeline.active
    feed(pipeline, audio(("q", 1.0)), start=len(samples) + 8000)  # half a second lost
    assert sink.kinds() == ["wake", "duck:on", "final:0", "duck:off"]
    assert sink.of("lattice")[0].end_time == pytest.approx(1.5)
    assert (pipeline.stats.gaps, pipeline.stats.lost_samples) == (1, 8000)


def test_finish_publishes_the_utterance_in_progress() -> None:
    sink = RecordingSink()
    pipeline = make_pipeline(scripted("stop"), sink)
    feed(pipeline, audio(("q", 0.5), ("v", 0.8)))
    pipeline.finish()
    assert sink.kinds() == ["wake", "duck:on", "final:0", "duck:off"]
    assert sink.of("lattice")[0].best.text == "stop"
    pipeline.finish()  # nothing more
    assert len(sink.messages) == 4


def test_chunk_size_does_not_change_the_lattices() -> None:
    samples = audio(("q", 0.5), ("v", 0.7), ("q", 0.5), ("v", 0.5), ("q", 1.0))
    results = []
    for chunk in (160, 320, 4000):
        sink = RecordingSink()
        feed(make_pipeline(scripted("turn it on"), sink), samples, chunk)
        results.append([(m.kind, m.seq, m.start_time, m.end_time, m.best.text) for m in sink.of("lattice")])
    assert results[0] == results[1] == results[2]


# ------------------------------------------------------------------------------------------ bias


class NoBias:
    def advance(self, token: int) -> tuple[BiasState, float]:
        return self, 0.0

    def final_bonus(self) -> float:
        return 0.0


def test_bias_list_is_kept_saved_and_handed_to_the_next_stream(tmp_path: Path) -> None:
    store = BiasStore(tmp_path / "state" / "bias.json")
    given: list[BiasSet] = []
    state = NoBias()

    def make_bias(document: BiasSet) -> BiasState:
        given.append(document)
        return state

    sink = RecordingSink()
    pipeline = Pipeline(scripted("hi"), VadTrigger(), sink, PipelineSettings(DEVICE, metrics_interval_s=0),
                        endpoints(), bias=store, make_bias=make_bias)
    feed(pipeline, audio(("q", 0.5), ("v", 0.5), ("q", 1.0)))
    assert given == []  # no list yet: the stream had no bias
    document = BiasSet.of(["Siobhan Okafor"], ["kitchen light"], version="v7")
    store.set(document)
    assert json.loads((tmp_path / "state" / "bias.json").read_text())["version"] == "v7"
    assert BiasStore().load(tmp_path / "state" / "bias.json") == document
    feed(pipeline, audio(("q", 0.5), ("v", 0.3)), start=32000)
    assert given == [document]
    assert pipeline._utt is not None and pipeline._utt.stream.bias is state


def test_a_bias_list_biases_the_next_utterance_toward_its_names() -> None:
    store = BiasStore()
    sink = RecordingSink()
    recognizer = scripted("call siobhan")
    pipeline = Pipeline(recognizer, VadTrigger(), sink, PipelineSettings(DEVICE, metrics_interval_s=0),
                        endpoints(), bias=store, make_bias=BiasGraphCache(recognizer.tokens, 2.0))
    speech = audio(("q", 0.5), ("v", 1.0), ("q", 1.0))
    feed(pipeline, speech)
    store.set(BiasSet.of(["Siobhan Okafor", "Siobhan"]))
    feed(pipeline, speech, start=len(speech))
    before, after = [m for m in sink.of("lattice") if m.kind == "final"]
    assert before.best.text == after.best.text == "call siobhan"
    assert before.best.bias_score == 0.0
    assert after.best.bias_score == pytest.approx(2.0 * len("siobhan "), abs=1e-6)  # every token of the name
    assert sum(a.bias_score for a in next(after.paths())) == pytest.approx(after.best.bias_score)


# ------------------------------------------------------------------------------------------ health


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_metrics_report_real_time_factor_lag_and_cpu() -> None:
    clock, cpu = FakeClock(), FakeClock()
    sink = RecordingSink()
    pipeline = Pipeline(scripted("hi"), VadTrigger(), sink, PipelineSettings(DEVICE, metrics_interval_s=0),
                        endpoints(), clock=clock, cpu_clock=cpu)
    samples = audio(("q", 0.5), ("v", 0.5), ("q", 1.0))
    for i in range(0, len(samples), 320):
        chunk = AudioChunk(samples[i:i + 320].copy(), i)
        clock.now = 100.0 + chunk.end / RATE + (0.3 if i > len(samples) // 2 else 0.0)  # falls behind
        pipeline._note_arrival(chunk)
        pipeline.process_chunk(chunk)
    cpu.now += 0.5
    metrics = pipeline.publish_metrics()
    assert sink.of("metrics") == [metrics]
    assert metrics.uptime_s == pytest.approx(2.3)
    assert metrics.real_time_factor is not None and 0 < metrics.real_time_factor < 1
    assert metrics.lag_s == pytest.approx(0.3, abs=0.01)
    assert metrics.cpu_percent == pytest.approx(0.5 / 2.3 * 100, abs=0.1)
    assert metrics.extra["trigger"] == "vad" and metrics.extra["utterances"] == 1
    clock.now += 1.0
    assert pipeline.metrics().real_time_factor is None  # a new period: no audio in it


class NotifyListener:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)

    def drain(self, seconds: float) -> list[str]:
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                pass
        return got


class GatedSource:
    """An audio source handing out quiet chunks while its gate is open, and blocking while it is shut."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.stopped = False
        self.position = 0

    def start(self) -> None:
        pass

    def read(self, timeout: float | None = None) -> AudioChunk | None:
        self.open.wait()  # a shut gate is a stuck device driver: the worker hangs here
        if self.stopped:
            return None
        time.sleep(0.02)
        chunk = AudioChunk(quiet(0.02, self.position), self.position)
        self.position = chunk.end
        return chunk

    def stop(self) -> None:
        self.stopped = True
        self.open.set()

    @property
    def ended(self) -> bool:
        return self.stopped

    @property
    def stats(self) -> SourceStats:
        return SourceStats("running", "gated test source", device="gate")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    notify = NotifyListener(tmp_path / "notify.sock")
    yield notify
    notify.sock.close()


def test_watchdog_is_fed_by_the_worker_and_starves_when_it_is_stuck(tmp_path: Path,
                                                                    listener: NotifyListener) -> None:
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "100000"},
                        use_library=False)
    source = GatedSource()
    pipeline = Pipeline(scripted("x"), VadTrigger(), RecordingSink(), PipelineSettings(DEVICE, metrics_interval_s=0),
                        endpoints(), source=source, notifier=notifier)
    pipeline.start()
    try:
        running = listener.drain(0.5)
        assert running.count("WATCHDOG=1") >= 4  # every half interval (50 ms), from the worker
        assert "STATUS=listening (vad trigger) on 'gate'; 0 utterances" in running
        source.open.clear()
        listener.drain(0.1)  # what the worker sent before it got stuck
        assert "WATCHDOG=1" not in listener.drain(0.4)  # stuck: systemd would restart harkd
        source.open.set()
        assert "WATCHDOG=1" in listener.drain(0.3)
    finally:
        source.stop()
        pipeline.stop()
    assert pipeline.done.is_set() and pipeline.error is None


def test_worker_ends_with_the_file_and_publishes_every_utterance(tmp_path: Path) -> None:
    import soundfile as sf

    path = tmp_path / "two.wav"
    sf.write(path, audio(("q", 0.5), ("v", 0.5), ("q", 1.0), ("v", 0.5)), RATE, subtype="PCM_16")
    source = FileSource(path, pace="fast")
    source.start()
    sink = RecordingSink()
    pipeline = Pipeline(scripted("go"), VadTrigger(), sink, PipelineSettings(DEVICE, metrics_interval_s=0),
                        endpoints(), source=source)
    pipeline.start()
    assert pipeline.done.wait(10)
    pipeline.stop()
    assert pipeline.error is None
    assert sink.kinds() == ["wake", "duck:on", "speculative:0", "final:1", "duck:off",
                            "wake", "duck:on", "final:0", "duck:off"]  # the second one cut by the end


# ------------------------------------------------------------------------------------------ real model


def run_sample(model_dir: Path) -> tuple[Recognizer, RecordingSink]:
    recognizer = Recognizer.load(model_dir, threads=1)
    source = FileSource(SAMPLES / "commands.wav", pace="fast")
    source.start()
    sink = RecordingSink()
    trigger = WakeTrigger.from_config(WakeConfig())  # the shipped wake model: the sample says "hey jarvis"
    pipeline = Pipeline(recognizer, trigger, sink, PipelineSettings(DEVICE, metrics_interval_s=0),
                        endpoints(), source=source)
    while (chunk := source.read()) is not None:
        pipeline.process_chunk(chunk)
    pipeline.finish()
    return recognizer, sink


def test_the_tflite_model_through_the_pipeline(recognizer_model: tuple[Path, bool]) -> None:
    recognizer, sink = run_sample(recognizer_model[0])
    # Resets, and the extra speculative lattice after one, depend on the words the model hears.
    kinds = " ".join(k for k in sink.kinds() if not k.startswith("reset"))
    utterance = r"wake duck:on (?:speculative:\d+ )+final:\d+ duck:off"
    assert re.fullmatch(f"{utterance} {utterance}", kinds), kinds
    lattices = sink.of("lattice")
    for final in (m for m in lattices if m.kind == "final"):
        ahead = [m.seq for m in lattices if m.kind == "speculative" and m.utterance_id == final.utterance_id]
        assert ahead == list(range(final.seq))
    finals = [m for m in sink.of("lattice") if m.kind == "final"]
    # Each utterance starts after its "hey jarvis" ended and before its command begins (1.31-1.71 s and
    # 5.38-5.78 s: daemon/samples/make-sample.sh).
    first, second = (f.start_time for f in finals)
    assert 1.31 <= first < 1.71 and 5.377 <= second < 5.777, (first, second)
    assert finals[0].models["recognizer"] == recognizer.version


@pytest.mark.parametrize("index", SAMPLE_UTTERANCES)
def test_the_shipped_model_hears_the_sample_words(index: int, recognizer_model: tuple[Path, bool]) -> None:
    model_dir, shipped = recognizer_model
    if not shipped:
        pytest.skip("needs the shipped model: models/recognizer is absent")
    _, sink = run_sample(model_dir)
    final = [m for m in sink.of("lattice") if m.kind == "final"][index]
    text = (SAMPLES / "commands.txt").read_text().split("\n")[index]
    assert set(text.split()) <= {arc.word for arc in final.arcs}, (text, final.nbest)

"""The media-playback simulator: ducking ramps (pure), decoding, the playback loop, and the real thing —
``harkd media-sim`` as a process ducking on messages from a real mosquitto, and playing through PortAudio."""

from __future__ import annotations

import itertools
import logging
import math
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
from daemon_process import REPO_ROOT, NotifyListener, base_env, write_config

from daemon.cli import main
from daemon.ducking import DuckGain, DuckSettings
from daemon.media_sim import (
    ClockSink,
    DuckListener,
    MediaSimError,
    MediaSimulator,
    Playlist,
    SimSettings,
    busy_work,
    to_int16,
)
from daemon.messages import MediaDuck, encode
from daemon.mqtt import MqttSettings

DEVICE = "sim-test"
UTTERANCE = "0b5c2a9e-7f31-4c1d-9a4e-2f6b8d0c1e37"


def db(x: float) -> float:
    return 20 * math.log10(x)


# ------------------------------------------------------------------------------------------ ramps (pure)


def test_duck_ramps_down_20_db_in_50_ms_and_holds() -> None:
    gain = DuckGain(DuckSettings(), 48000)
    assert gain.state == "normal" and np.all(gain.gains(480) == 1.0)
    gain.duck()
    ramp = gain.gains(2400)  # 50 ms
    assert np.all(np.diff(ramp) < 0)  # falls from the first sample on
    assert db(ramp[1199]) == pytest.approx(-10.0, abs=0.01)  # linear in dB: halfway at 25 ms
    assert db(ramp[-1]) == pytest.approx(-20.0, abs=1e-4)
    assert gain.state == "ducked"
    held = gain.gains(4800)
    assert np.all(held == ramp[-1])


def test_release_ramps_back_over_release_ms() -> None:
    gain = DuckGain(DuckSettings(release_ms=300.0), 1000)
    gain.duck()
    gain.gains(100)
    gain.release()
    assert gain.state == "restoring"
    back = gain.gains(300)
    assert np.all(np.diff(back) > 0)
    assert db(back[149]) == pytest.approx(-10.0, abs=0.01)
    assert back[-1] == 1.0 and gain.state == "normal"
    assert gain.timeouts == 0


def test_an_unreleased_duck_is_released_after_the_timeout() -> None:
    gain = DuckGain(DuckSettings(timeout_s=1.0, release_ms=100.0), 1000)
    gain.gains(250)
    gain.duck()
    ducked = gain.gains(1000)  # the timeout falls on the last sample's successor
    assert db(ducked[-1]) == pytest.approx(-20.0, abs=1e-6) and gain.timeouts == 0
    after = gain.gains(200)
    assert gain.timeouts == 1 and not gain.ducked
    assert db(after[0]) > -20.0  # the release starts exactly 1 s after the request
    assert after[99] == 1.0 and gain.state == "normal"


def test_a_repeated_duck_re_arms_the_timeout() -> None:
    gain = DuckGain(DuckSettings(timeout_s=1.0), 1000)
    gain.duck()
    gain.gains(600)
    gain.duck()  # harkd heard another utterance
    held = gain.gains(999)  # up to 1.6 s after the first request: still ducked
    assert np.all(held == held[0]) and gain.timeouts == 0
    gain.gains(2)
    assert gain.timeouts == 1 and gain.state == "restoring"


def test_a_duck_mid_release_turns_around_from_where_it_is() -> None:
    gain = DuckGain(DuckSettings(attack_ms=50.0, release_ms=300.0), 1000)
    gain.duck()
    gain.gains(50)
    gain.release()
    gain.gains(150)  # halfway back: -10 dB
    assert gain.gain_db == pytest.approx(-10.0)
    gain.duck()
    again = gain.gains(30)
    assert db(again[0]) == pytest.approx(-10.4, abs=0.01)  # 0.4 dB per ms down from -10 dB
    assert db(again[24]) == pytest.approx(-20.0, abs=1e-4) and gain.state == "ducked"


def test_requested_levels() -> None:
    gain = DuckGain(DuckSettings(), 1000)
    gain.duck(level=0.5)
    assert db(gain.gains(100)[-1]) == pytest.approx(db(0.5), abs=1e-4)
    gain.duck(level=0.0)  # silence: ramps to the floor, then zero
    assert gain.gains(1000)[-1] == 0.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        gain.duck(level=1.5)
    with pytest.raises(ValueError):
        DuckSettings(depth_db=3.0)


def play_script(gain: DuckGain, events: dict[int, str], total: int, step: int | None) -> npt.NDArray[np.float32]:
    """Gains of ``total`` samples with requests at the given samples, asked for ``step`` at a time."""
    out: list[npt.NDArray[np.float32]] = []
    bounds = sorted([0, *events, total])
    for start, end in itertools.pairwise(bounds):
        if events.get(start) == "duck":
            gain.duck()
        elif events.get(start) == "release":
            gain.release()
        n = end - start
        sizes = [n] if step is None else [step] * (n // step) + [n % step]
        out += [gain.gains(k) for k in sizes]
    return np.concatenate(out)


def test_gains_do_not_depend_on_how_the_samples_are_asked_for() -> None:
    settings = DuckSettings(timeout_s=0.5, attack_ms=50.0, release_ms=120.0)
    events = {800: "duck", 2000: "duck", 9000: "release", 9500: "duck"}  # sample -> request
    whole, pieces = DuckGain(settings, 8000), DuckGain(settings, 8000)
    assert np.array_equal(play_script(whole, events, 16000, None), play_script(pieces, events, 16000, 37))
    assert whole.timeouts == pieces.timeouts == 2  # after 2000 (at 6000) and after 9500 (at 13500)


# ------------------------------------------------------------------------------------------ decoding


def tone(rate: int, seconds: float, freqs: tuple[float, ...], amplitude: float = 0.5) -> npt.NDArray[np.float32]:
    t = np.arange(round(rate * seconds)) / rate
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def peak_hz(x: npt.NDArray[Any], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def test_playlist_decodes_resamples_maps_channels_and_loops(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    sf.write(path, tone(44100, 0.3, (1000.0, 500.0)), 44100, subtype="FLOAT")
    stereo = Playlist([path], 48000, 2)
    out = np.concatenate([stereo.read(960) for _ in range(50)])  # 1 s: the 0.3 s file three times and more
    assert out.shape == (48000, 2) and out.dtype == np.float32
    middle = out[3000:13000]
    assert peak_hz(middle[:, 0], 48000) == pytest.approx(1000, abs=5)
    assert peak_hz(middle[:, 1], 48000) == pytest.approx(500, abs=5)
    rms = np.sqrt(np.mean(middle**2, axis=0))
    assert rms == pytest.approx([0.5 / math.sqrt(2)] * 2, rel=0.01)  # the resampler keeps the level
    assert np.sqrt(np.mean(out[18000:26000] ** 2)) > 0.3  # still playing after the first loop
    mono = Playlist([path], 16000, 1).read(4000)
    assert mono.shape == (4000, 1)
    stereo.close()


def test_a_playlist_refuses_unreadable_files_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    with pytest.raises(MediaSimError, match=r"notes\.wav"):
        Playlist([bad], 48000, 2)


def test_busy_work_spends_cpu_time() -> None:
    start = time.thread_time()
    busy_work(0.05)
    assert time.thread_time() - start >= 0.05


# ------------------------------------------------------------------------------------------ the loop


class HalfScale:
    """Music at -6 dBFS DC: the output shows the gain directly."""

    name = "half scale"

    def read(self, n: int) -> npt.NDArray[np.float32]:
        return np.full((n, 1), 0.5, dtype=np.float32)

    def close(self) -> None:
        pass


class ScriptedSink:
    """Collects blocks; after block k it sends the requests scripted for k (as the MQTT thread would)."""

    description = "a list"

    def __init__(self, script: dict[int, MediaDuck]) -> None:
        self.blocks: list[npt.NDArray[np.int16]] = []
        self.script = script
        self.simulator: MediaSimulator | None = None
        self.underruns = 0

    def write(self, block: npt.NDArray[np.int16]) -> None:
        self.blocks.append(block.copy())
        request = self.script.get(len(self.blocks))
        if request is not None and self.simulator is not None:
            self.simulator.request(request)

    def close(self) -> None:
        pass


def test_the_loop_applies_requests_at_the_next_block_and_times_out(caplog: pytest.LogCaptureFixture) -> None:
    settings = SimSettings(sample_rate=8000, channels=1, block_ms=10.0, duration_s=1.0,
                           duck=DuckSettings(timeout_s=0.3, release_ms=50.0))
    sink = ScriptedSink({10: MediaDuck(DEVICE, True, UTTERANCE), 30: MediaDuck(DEVICE, False, UTTERANCE),
                         50: MediaDuck(DEVICE, True)})
    simulator = MediaSimulator(settings, HalfScale(), sink)
    sink.simulator = simulator
    with caplog.at_level(logging.INFO, logger="daemon.media_sim"):
        stats = simulator.run(threading.Event())
    levels = np.array([b[-1, 0] for b in sink.blocks])
    full = to_int16(np.array([0.5], dtype=np.float32))[0]
    assert stats.frames == 8000 and len(sink.blocks) == 100  # exactly the duration
    assert np.all(levels[:10] == full)
    assert sink.blocks[10][0, 0] < full  # the ramp starts with the block after the request
    assert levels[15:30] == pytest.approx(full / 10, abs=1)  # -20 dB
    assert np.all(levels[36:50] == full)  # released (50 ms)
    assert levels[55:80] == pytest.approx(full / 10, abs=1)  # ducked again, never released ...
    assert np.all(levels[87:] == full)  # ... until 0.3 s later
    assert (stats.ducks, stats.releases, stats.timeouts) == (2, 1, 1)
    assert "duck not released within 0.3 s" in caplog.text
    assert f"duck on (utterance {UTTERANCE})" in caplog.text


# ------------------------------------------------------------------------------------------ with a real broker

RATE = 48000
TONE_HZ = 400.0  # 20 whole cycles in a 50 ms window, and the 1 s file loops seamlessly
WINDOW = 2400  # 50 ms


def window_levels_db(path: Path, reference: float) -> npt.NDArray[np.float64]:
    """Level of each 50 ms window of the file's first channel, in dB relative to ``reference`` RMS."""
    audio, rate = sf.read(path, dtype="float64", always_2d=True)
    assert rate == RATE
    x = audio[: len(audio) // WINDOW * WINDOW, 0].reshape(-1, WINDOW)
    return np.asarray(20 * np.log10(np.sqrt(np.mean(x**2, axis=1)) / reference + 1e-12))


def wait_for_text(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log within {timeout} s:\n{path.read_text(errors='replace')}")


def test_media_sim_ducks_on_mqtt_and_writes_what_it_played(tmp_path: Path, mosquitto: Any,
                                                           mqtt_collector: Any) -> None:
    music = tmp_path / "tone.wav"
    sf.write(music, tone(RATE, 1.0, (TONE_HZ, TONE_HZ)), RATE, subtype="FLOAT")
    config = write_config(tmp_path / "harkd.yaml", {"device_id": DEVICE,
                                                    "mqtt": {"host": mosquitto.host, "port": mosquitto.port}})
    out, log = tmp_path / "played.wav", tmp_path / "media-sim.log"
    notify = NotifyListener(tmp_path / "notify.sock")
    publisher = mqtt_collector(["nothing/#"])
    topic = f"harkd/{DEVICE}/media/duck"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "media-sim", "--config", str(config), "--output", str(out),
             str(music)],
            env=base_env({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}), cwd=REPO_ROOT,
            stdout=log_file, stderr=subprocess.STDOUT)
    try:
        notify.wait_for(lambda f: f.get("READY") == "1", timeout=20)
        wait_for_text(log, f"subscribed to {topic}", timeout=10)
        time.sleep(0.5)
        publisher.publish(topic, b"not json")
        publisher.publish(topic, b'{"schema": "harkd.media_duck/1", "device_id": "sim-test", "duck": "yes"}')
        publisher.publish(topic, encode(MediaDuck("another-device", True)))
        publisher.publish(topic, encode(MediaDuck(DEVICE, True, UTTERANCE)))
        notify.wait_for(lambda f: f.get("STATUS", "").endswith("; ducked"), timeout=5)
        time.sleep(1.0)
        publisher.publish(topic, encode(MediaDuck(DEVICE, False, UTTERANCE)))
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        notify.close()
    text = log.read_text()
    assert text.count("ignored malformed message") == 3, text
    assert "1 ducks, 1 releases, 0 timeouts, 3 malformed requests" in text, text
    assert any(f.get("STOPPING") == "1" for _, f in notify.fields())

    levels = window_levels_db(out, 0.5 / math.sqrt(2))
    full = np.abs(levels) < 0.1
    ducked = np.abs(levels + 20.0) < 0.1
    assert full[:10].all(), levels[:10]  # 0.5 s at full volume before the requests
    assert ducked.any(), levels
    first, last = np.flatnonzero(ducked)[[0, -1]]
    assert ducked[first : last + 1].all(), levels  # one stretch at -20 dB ...
    assert (last - first + 1) * 0.05 >= 0.9  # ... held about a second
    assert np.count_nonzero(~full[:first] & ~ducked[:first]) <= 2  # 50 ms ramp down: within two windows
    release = np.flatnonzero(full[last + 1 :])[0]  # 300 ms ramp back: about six windows in between
    assert 4 <= release <= 8, levels[last : last + 10]
    assert full[last + 1 + release :].all() and len(levels) - (last + 1 + release) >= 10  # back for good
    assert not np.any(levels[10:first] < -20.5)  # nothing else happened: the malformed requests did not


def test_playback_goes_on_while_the_broker_is_away_and_ducks_once_it_is_back(tmp_path: Path,
                                                                             mosquitto: Any,
                                                                             mqtt_collector: Any) -> None:
    mosquitto.stop()
    music = tmp_path / "tone.wav"
    sf.write(music, tone(RATE, 1.0, (TONE_HZ,)), RATE, subtype="FLOAT")
    settings = SimSettings(sample_rate=RATE, channels=1)
    stop = threading.Event()
    simulator = MediaSimulator(settings, Playlist([music], RATE, 1), ClockSink(None, RATE, 1, interrupt=stop))
    listener = DuckListener(MqttSettings(DEVICE, mosquitto.host, mosquitto.port, reconnect_min_s=0.1,
                                         reconnect_max_s=0.3), simulator.request)
    listener.start()
    player = threading.Thread(target=simulator.run, args=(stop,))
    player.start()
    try:
        time.sleep(1.0)
        assert simulator.stats.frames >= 0.8 * RATE and not listener.subscribed  # playing without a broker
        mosquitto.start()
        assert listener.wait_subscribed(10)
        mqtt_collector(["nothing/#"]).publish(f"harkd/{DEVICE}/media/duck", encode(MediaDuck(DEVICE, True)))
        deadline = time.monotonic() + 5
        while simulator.ducker.state != "ducked" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert simulator.ducker.state == "ducked"
    finally:
        stop.set()
        player.join(5)
        listener.stop()
    assert not player.is_alive() and simulator.stats.underruns == 0


# ------------------------------------------------------------------------------------------ through PortAudio


def test_media_sim_plays_through_a_portaudio_device_and_records_the_same(tmp_path: Path, alsa_devices: Any) -> None:
    raw = alsa_devices.add_output_device("harkdsimout")
    music = tmp_path / "music.wav"
    sf.write(music, tone(44100, 0.7, (440.0, 660.0)), 44100, subtype="FLOAT")
    record = tmp_path / "record.wav"
    config = write_config(tmp_path / "harkd.yaml", {"device_id": DEVICE})
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "media-sim", "--config", str(config), "--no-mqtt",
         "--device", "harkdsimout", "--record", str(record), "--duration", "6", str(music)],
        env=alsa_devices.env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    played = np.fromfile(raw, dtype="<i2").reshape(-1, 2)
    recorded, rate = sf.read(record, dtype="int16", always_2d=True)
    assert rate == 48000 and recorded.shape == (6 * 48000, 2)
    assert np.array_equal(played, recorded)  # the device got exactly what was recorded as played
    assert peak_hz(recorded[5000:15000, 0].astype(np.float64), rate) == pytest.approx(440, abs=5)
    assert "not paced in real time" in proc.stderr  # the file device takes 6 s of audio at once


def test_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["media-sim", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--output", "--device", "--cpu-load", "--duck-timeout", "--config", "media/duck"):
        assert option in text

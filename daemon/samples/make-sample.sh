#!/bin/sh
# Rebuilds commands.wav, the recording `python -m daemon.demo` plays: two spoken commands, each after the
# wake phrase, 16 kHz mono 16-bit, over faint white noise (as a quiet room gives a microphone). Needs
# espeak-ng and sox.
#   0.5 s quiet | "hey jarvis" | 0.4 s quiet | "call doctor siobhan okafor" | 1.1 s quiet
#               | "hey jarvis" | 0.4 s quiet | "turn on the kitchen light"  | 1.1 s quiet
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
for text in "hey jarvis" "call doctor siobhan okafor" "turn on the kitchen light"; do
    n=$((n + 1))
    espeak-ng -v en-us -s 160 -w "$tmp/raw$n.wav" "$text"
    # 16 kHz mono 16-bit, leading and trailing silence trimmed, peak at -3 dBFS.
    sox -R -D "$tmp/raw$n.wav" -r 16000 -c 1 -b 16 "$tmp/say$n.wav" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse gain -n -3
done
sox -R -D -n -r 16000 -c 1 -b 16 "$tmp/gap_start.wav" trim 0 0.5
sox -R -D -n -r 16000 -c 1 -b 16 "$tmp/gap_wake.wav" trim 0 0.4
sox -R -D -n -r 16000 -c 1 -b 16 "$tmp/gap.wav" trim 0 1.1
sox -R -D "$tmp/gap_start.wav" "$tmp/say1.wav" "$tmp/gap_wake.wav" "$tmp/say2.wav" "$tmp/gap.wav" \
    "$tmp/say1.wav" "$tmp/gap_wake.wav" "$tmp/say3.wav" "$tmp/gap.wav" "$tmp/speech.wav"
seconds=$(soxi -D "$tmp/speech.wav")
# Noise at about -66 dBFS RMS; seeded so the file is the same on every run.
sox -R -D -n -r 16000 -c 1 -b 16 "$tmp/noise.wav" synth "$seconds" whitenoise vol 0.0005
sox -R -D -m -v 1 "$tmp/speech.wav" -v 1 "$tmp/noise.wav" -b 16 "$here/commands.wav"
soxi "$here/commands.wav"

#!/usr/bin/env bash
# System packages harkd needs on Debian / Raspberry Pi OS: the broker for the demo and tests, PortAudio and
# ALSA tools for audio, libsndfile for FLAC, and systemd's tools and headers (sd_notify, unit verification).
# Run as root; idempotent. Without root it only reports what is missing.
set -euo pipefail
PACKAGES=(mosquitto mosquitto-clients libportaudio2 alsa-utils libsndfile1 systemd libsystemd-dev pkg-config
          espeak-ng sox)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-system-deps.sh: missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

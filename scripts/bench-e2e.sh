#!/usr/bin/env bash
# End to end with the real model: `earshot serve` (Whisper tiny.en) and `earshot loadgen` with
# real speech from the shared corpus (else the bundled recordings).
#
#   scripts/bench-e2e.sh realtime [N ...]   N real-time sessions (default 1 2 4 8), DURATION s each
#   scripts/bench-e2e.sh overload [N]       N sessions (default 4) at 3x real-time pace
#
# JSON reports go to ${OUT:-target/bench}/e2e-*.json. SERVE_ARGS adds options to `earshot serve`
# (e.g. SERVE_ARGS="--max-buffer-bytes 262144"); NAME_SUFFIX tells such runs apart.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-realtime}"
shift || true
duration="${DURATION:-60}"
out="${OUT:-target/bench}"
mkdir -p "$out"
make model >&2
cargo build --release -p earshot-cli >&2
bin=target/release/earshot
audio="${EARSHOT_SPEECH_DIR:-../shared/speech}"
[[ -f "$audio/refs.tsv" ]] || audio=tests/fixtures/speech

port=18282
run() {
    local name="$1"
    shift
    # A fresh server per run: its memory and histograms belong to this run only.
    # shellcheck disable=SC2086 # SERVE_ARGS is a list of options
    "$bin" serve --listen "127.0.0.1:$port" --store sqlite::memory: --max-sessions-per-ip 0 --max-pace 0 ${SERVE_ARGS:-} >/dev/null 2>"$out/$name.log" &
    local pid=$!
    until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.5; done
    echo "== $name" >&2
    "$bin" loadgen --url "ws://127.0.0.1:$port/v1/stt" --audio "$audio" --server-pid "$pid" \
        --out "$out/$name.json" "$@"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

case "$mode" in
realtime)
    counts=("$@")
    ((${#counts[@]})) || counts=(1 2 4 8)
    for n in "${counts[@]}"; do
        run "e2e-$n" --sessions "$n" --ramp-secs 2 --duration-secs "$duration"
    done
    ;;
overload)
    n="${1:-4}"
    run "e2e-overload-$n${NAME_SUFFIX:-}" --sessions "$n" --pace 3 --duration-secs "$duration"
    ;;
*)
    echo "usage: $0 realtime [N ...] | overload [N]" >&2
    exit 2
    ;;
esac

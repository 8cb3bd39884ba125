#!/usr/bin/env bash
# Gateway capacity: concurrent real-time sessions through one gateway in front of the
# BENCHMARK-ONLY echo engine (so that the model is not the bottleneck), at each session count
# given (default 100 1000 5000 10000). Prints each loadgen report; JSON reports go to
# ${OUT:-target/bench}/gateway-N.json.
#
# Usage: scripts/bench-gateway.sh [N ...]     (env: DURATION seconds per run, default 60)
set -euo pipefail
cd "$(dirname "$0")/.."

counts=("$@")
((${#counts[@]})) || counts=(100 1000 5000 10000)
duration="${DURATION:-60}"
out="${OUT:-target/bench}"
mkdir -p "$out"
cargo build --release -p earshot-cli >&2
bin=target/release/earshot

engine_port=15151
gateway_port=18181
"$bin" engine --benchmark-echo --listen "127.0.0.1:$engine_port" >/dev/null 2>"$out/echo-engine.log" &
engine_pid=$!
trap 'kill $engine_pid ${gateway_pid:-} 2>/dev/null || true' EXIT
sleep 1

for n in "${counts[@]}"; do
    # A fresh gateway per run, so that its memory and histograms belong to this run only.
    "$bin" gateway --listen "127.0.0.1:$gateway_port" --engine "http://127.0.0.1:$engine_port" \
        --store sqlite::memory: --max-connections 20000 --max-sessions-per-ip 0 >/dev/null 2>"$out/gateway-$n.log" &
    gateway_pid=$!
    sleep 1
    # Ramp over a quarter of the run, at most 30 s.
    ramp=$(( n / 300 > 30 ? 30 : (n / 300 > 1 ? n / 300 : 1) ))
    echo "== $n sessions, ${duration} s, ramp ${ramp} s" >&2
    "$bin" loadgen --url "ws://127.0.0.1:$gateway_port/v1/stt" --sessions "$n" \
        --ramp-secs "$ramp" --duration-secs "$duration" --server-pid "$gateway_pid" \
        --out "$out/gateway-$n.json"
    kill "$gateway_pid"
    wait "$gateway_pid" 2>/dev/null || true
done

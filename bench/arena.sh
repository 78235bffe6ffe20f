#!/usr/bin/env bash
# The arena benchmark of bench/README.md: Ludus and the native baseline, each alone on
# this machine with the load generator, at fixed N and with --find-max, then a live swap
# under load, and the socket floor (`ludus bench floor`) at each N, RUNS times (default
# 3; report the medians). Usage:
#   RUNS=3 bash bench/arena.sh [N ...]   (default N: 500 2000 5000)
# Each run's JSON lines are appended to $OUT (default target/arena-bench.jsonl).
# PIN=1 runs each server on core 1 and the load generator on core 0, and ends with the
# median of server CPU / load-generator CPU per label (the steadier measure of
# bench/README.md; it needs 2 cores and taskset).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-500 2000 5000}")
runs=${RUNS:-3}
out=${OUT:-target/arena-bench.jsonl}
exec > >(tee -a "$out") 2>&1
cargo build --release --workspace
target/release/ludus build >/dev/null
work=$(mktemp -d)
cp example-games/target/wasm32-wasip2/release/arena.wasm "$work/arena.wasm"
cp "$work/arena.wasm" "$work/live.wasm"
cp example-games/target/wasm32-wasip2/release/arena_v2.wasm "$work/arena_v2.wasm"
bench=target/release/ludus
on_server=(); on_loadgen=()
if [ -n "${PIN:-}" ]; then on_server=(taskset -c 1); on_loadgen=(taskset -c 0); fi
first_line=$(($(wc -l < "$out" 2>/dev/null || echo 0) + 1))
export LUDUS_GATEWAY__MAX_CONNECTIONS=20000 LUDUS_GATEWAY__MAX_CONNECTIONS_PER_IP=20000 LUDUS_GATEWAY__GUEST_LOGIN_BURST=1000000 LUDUS_LOG=warn
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); sleep 1; }
trap stop EXIT
# Each Ludus run starts on fresh data: a node stopped with SIGTERM keeps its rooms and
# sessions, and one started on the same data brings them back (ticking, checkpointing),
# which would charge one run with the last one's rooms. A room left empty closes after
# 1 s (the default is 60 s), as native's close at once, so a find-max step does not
# carry the previous steps' rooms.
start_ludus() {
  rm -rf "$work/data"
  LUDUS_ROOMS__EMPTY_TIMEOUT=1s "${on_server[@]}" "$bench" serve --listen 127.0.0.1:7400 --data-dir "$work/data" \
    --game arena="$work/live.wasm" >/dev/null & pids+=($!); sleep 2; }
start_native() { "${on_server[@]}" target/release/native-arena 127.0.0.1:7401 >/dev/null & pids+=($!); sleep 1; }

for run in $(seq "$runs"); do
echo "== run $run of $runs"
for n in ${sizes[*]}; do
  "$bench" bench floor --clients "$n"
  start_native; "${on_loadgen[@]}" "$bench" bench arena --target 127.0.0.1:7401 --label native --clients "$n"; stop
  start_ludus;  "${on_loadgen[@]}" "$bench" bench arena --target 127.0.0.1:7400 --label ludus --clients "$n"; stop
done
start_native; "${on_loadgen[@]}" "$bench" bench arena --target 127.0.0.1:7401 --label native --find-max --step 500 --duration 6s; stop
start_ludus;  "${on_loadgen[@]}" "$bench" bench arena --target 127.0.0.1:7400 --label ludus --find-max --step 500 --duration 6s; stop
cp "$work/arena.wasm" "$work/live.wasm"
start_ludus;  "${on_loadgen[@]}" "$bench" bench arena --target 127.0.0.1:7400 --label ludus-swap --clients 1000 \
                --swap "$work/live.wasm" --swap-with "$work/arena_v2.wasm"; stop
done
if [ -n "${PIN:-}" ]; then
  tail -n +"$first_line" "$out" | python3 -c '
import json, statistics, sys
ratios = {}
for line in sys.stdin:
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if isinstance(r, dict) and r.get("server_cpu_pct") and r.get("loadgen_cpu_pct"):
        key = (r["label"], r["clients"])
        ratios.setdefault(key, []).append(r["server_cpu_pct"] / r["loadgen_cpu_pct"])
for (label, n), v in sorted(ratios.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"{label:<10} N={n:<6} server / load generator CPU: median {statistics.median(v):.3f} over {len(v)} run(s)")
'
fi

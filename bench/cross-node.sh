#!/usr/bin/env bash
# Cross-node play and the matchmaker, as in bench/README.md: a private etcd and three
# `ludus serve` nodes on this machine.
#  (1) arena latency when every player's room lives on another node than its gateway
#      (`--rooms-on`), against the same workload in rooms on the gateway's own node;
#  (2) matchmaker throughput: N clients spread over the nodes ask for arena matches of 8
#      at once; tickets matched per second.
# Usage: bash bench/cross-node.sh [CLIENTS] [TICKETS] [RUNS]   (default 1000 4000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-1000}
tickets=${2:-4000}
runs=${3:-3}
cargo build --release --workspace
target/release/ludus build >/dev/null
work=$(mktemp -d)
cp example-games/target/wasm32-wasip2/release/arena.wasm "$work/arena.wasm"
command -v etcd >/dev/null || { echo "needs etcd: sudo apt-get install etcd-server" >&2; exit 1; }
pids=()
stop() { for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; sleep 0.5; done; pids=(); }
trap stop EXIT
etcd_url=http://127.0.0.1:23790
etcd --name bench --data-dir "$work/etcd" --listen-client-urls $etcd_url --advertise-client-urls $etcd_url \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster bench=http://127.0.0.1:23800 >"$work/etcd.log" 2>&1 & pids+=($!)
sleep 2
export LUDUS_AUTH__SECRET="a benchmark secret of some length, 32+ bytes" LUDUS_CLUSTER__SECRET="the benchmark cluster's secret, 32+ bytes" LUDUS_LOG=warn LUDUS_GATEWAY__MAX_CONNECTIONS=20000 LUDUS_GATEWAY__MAX_CONNECTIONS_PER_IP=20000 LUDUS_GATEWAY__GUEST_LOGIN_BURST=1000000
export LUDUS_MATCHMAKING__GAMES__ARENA__MIN_PLAYERS=8 LUDUS_MATCHMAKING__GAMES__ARENA__MAX_PLAYERS=8
for i in 1 2 3; do
  target/release/ludus serve --etcd $etcd_url --node-id "n$i" --listen "127.0.0.1:74${i}0" \
    --game arena="$work/arena.wasm" >/dev/null & pids+=($!)
done
sleep 3
ludus() { target/release/ludus "$@"; }
out=target/cross-node-bench.jsonl
: >"$out"
for run in $(seq "$runs"); do
  echo "== run $run: $clients clients on n1, rooms on n1 (local)"
  ludus bench arena --target 127.0.0.1:7410 --clients "$clients" --label local 2>/dev/null | tee -a "$out" | grep -v '^{'
  sleep 3
  echo "== run $run: $clients clients on n1, rooms on n2 (remote)"
  ludus bench arena --target 127.0.0.1:7410 --rooms-on 127.0.0.1:7420 --clients "$clients" --label remote 2>/dev/null | tee -a "$out" | grep -v '^{'
  sleep 3
done
# After the arena runs: matched rooms stay until their players leave (then close).
for run in $(seq "$runs"); do
  echo "== run $run: $tickets tickets over 3 nodes, rooms of 8"
  ludus bench match --targets 127.0.0.1:7410,127.0.0.1:7420,127.0.0.1:7430 --tickets "$tickets" | tee -a "$out" | grep -v '^{'
  sleep 3
done
echo "JSON lines in $out"

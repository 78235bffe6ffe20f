#!/usr/bin/env bash
# The cluster benchmark of bench/README.md: three `ludus serve` nodes and a private etcd
# on this machine. Measures (1) the time from `ludus deploy` writing the desired version
# to every node reporting it, and (2) etcd requests that change state (Put, Txn,
# DeleteRange, lease grants/revokes/keep-alives) per node at idle and per 1000 players,
# and (3) the keys those players leave in etcd, by kind, with their sizes.
# Usage: bash bench/cluster.sh [DEPLOYS]   (default 10: v1 -> v2 -> v1 ...)
set -euo pipefail
cd "$(dirname "$0")/.."
deploys=${1:-10}
cargo build --release --workspace
target/release/ludus build >/dev/null
work=$(mktemp -d)
cp example-games/target/wasm32-wasip2/release/arena.wasm "$work/v1.wasm"
cp example-games/target/wasm32-wasip2/release/arena_v2.wasm "$work/v2.wasm"
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
for i in 1 2 3; do
  target/release/ludus serve --etcd $etcd_url --node-id "n$i" --listen "127.0.0.1:74${i}0" \
    --admin "127.0.0.1:74${i}1" --data-dir "$work/n$i" --game arena="$work/v1.wasm" >/dev/null & pids+=($!)
done
sleep 3
ludus() { target/release/ludus "$@"; }
# Writes so far: state-changing etcd requests (a keep-alive counts once per message).
writes() {
  curl -s $etcd_url/metrics | awk '
    /^grpc_server_msg_received_total/ && /grpc_method="(Put|Txn|DeleteRange|LeaseGrant|LeaseRevoke|LeaseKeepAlive)"/ { n += $2 }
    END { print n + 0 }'
}

# Keys under /ludus/ by kind (sessions, rooms, ...): count and mean key+value bytes, read
# through etcd's JSON gateway; and the database bytes in use.
keys() {
  curl -s -X POST $etcd_url/v3/kv/range \
    -d "{\"key\":\"$(printf /ludus/ | base64)\",\"range_end\":\"$(printf /ludus0 | base64)\"}" |
    python3 -c '
import base64, collections, json, sys
kvs = json.load(sys.stdin).get("kvs", [])
by = collections.defaultdict(lambda: [0, 0])
for kv in kvs:
    key = base64.b64decode(kv["key"]).decode()
    kind = key.split("/")[3] if key.count("/") >= 3 else key
    by[kind][0] += 1
    by[kind][1] += len(key) + len(base64.b64decode(kv.get("value", "")))
print("  keys: " + ", ".join(f"{k} {n} (mean {b / n:.0f} B)" for k, (n, b) in sorted(by.items())))'
  curl -s $etcd_url/metrics | awk '/^etcd_mvcc_db_total_size_in_use_in_bytes/ { printf "  etcd database in use: %.1f MiB\n", $2 / 1048576 }'
}

echo "== etcd writes at idle (3 nodes, 30 s)"
w0=$(writes); sleep 30; w1=$(writes)
echo "idle: $((w1 - w0)) writes in 30 s for 3 nodes: $(awk "BEGIN { printf \"%.2f\", ($w1 - $w0) / 30 / 3 }") per node per second"

echo "== deploy: time from the etcd write to all 3 nodes reporting (ms)"
ludus deploy arena "$work/v1.wasm" --etcd $etcd_url | tail -1
for i in $(seq "$deploys"); do
  if [ $((i % 2)) = 1 ]; then f=v2; else f=v1; fi
  ludus deploy arena "$work/$f.wasm" --etcd $etcd_url | tail -1
done
echo "== deploy under load: 300 players in rooms on node 1"
ludus bench arena --target 127.0.0.1:7410 --clients 300 --duration 20s >"$work/load.txt" 2>&1 &
load=$!
sleep 8
for f in v2 v1 v2 v1; do ludus deploy arena "$work/$f.wasm" --etcd $etcd_url | tail -1; done
wait $load; grep -v '^{' "$work/load.txt" | tail -2

echo "== etcd writes with 1000 players on node 1 (join, 13 s play, leave)"
w0=$(writes)
ludus bench arena --target 127.0.0.1:7410 --clients 1000 --duration 10s 2>/dev/null | grep -v '^{' &
b=$!
# Joins take ~2 s; then 3 s warm-up and 10 s of measurement: sample steady play in between.
sleep 6; s0=$(writes); keys; sleep 7; s1=$(writes)
wait $b; sleep 3; w1=$(writes)
echo "1000 players: $((s0 - w0)) writes while joining (a session key per login, a claim and an update per room)"
echo "  steady play: $(awk "BEGIN { printf \"%.1f\", ($s1 - $s0) / 7 }") writes/s (lease keep-alives; seats do not change)"
echo "  leaving and after: $((w1 - s1)) writes (session keys released, rooms removed)"

#!/usr/bin/env bash
# What `with_payload` costs a k=10 Search over gRPC: serves a fresh data directory,
# loads the MiniLM passages with their payloads (id, source, text), waits for the seal,
# then runs `octet bench-grpc` with one client, searches only, alternating without and
# with payloads for ROUNDS rounds of SECONDS each, and prints every round's p50/p95.
#
#   benches/grpc_payload.sh [DATA_DIR] [SECONDS] [ROUNDS]
#
# OCTET is the client binary (default target/release/octet); SERVER_OCTET the
# server's (default OCTET), so an older server can be measured with this client.
# LIMIT=N loads only the first N rows and leaves them in the growing segment (no
# seal: quick, and enough to see a transport delay).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
secs=${2:-10}
rounds=${3:-3}
octet=${OCTET:-target/release/octet}
server=${SERVER_OCTET:-$octet}
dir=$(mktemp -d)
log="$dir/serve.log"
"$server" serve --data "$dir/data" --addr 127.0.0.1:0 >"$log" 2>"$dir/serve.err" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  grep -q '^listening on' "$log" && break
  sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$log")
[[ -n "$addr" ]] || { echo "server did not start:" >&2; cat "$dir/serve.err" >&2; exit 1; }
url="http://$addr"
n=$(( $(stat -c %s "$data/base.fvecs") / (4 * 385) ))
base="$data/base.fvecs" payloads="$data/passages.jsonl" threshold=$n
if [[ -n "${LIMIT:-}" ]]; then
  head -c $(( LIMIT * 4 * 385 )) "$data/base.fvecs" >"$dir/base.fvecs"
  head -n "$LIMIT" "$data/passages.jsonl" >"$dir/passages.jsonl"
  base="$dir/base.fvecs" payloads="$dir/passages.jsonl" threshold=$(( LIMIT + 1 ))
fi
"$octet" collection create minilm --addr "$url" --dim 384 --seal-threshold "$threshold" >/dev/null
"$octet" upsert minilm --addr "$url" --fvecs "$base" --payloads "$payloads" 2>/dev/null
if [[ -z "${LIMIT:-}" ]]; then
  for _ in $(seq 1800); do
    "$octet" collection info minilm --addr "$url" | grep -Eq '^segments +1 sealed .*growing 0$' && break
    sleep 1
  done
fi
"$octet" collection info minilm --addr "$url" | grep -E '^(segments|points|codec)'
for r in $(seq "$rounds"); do
  for flag in "" --with-payload; do
    line=$("$octet" bench-grpc --addr "$url" --collection minilm --clients 1 --duration "$secs" \
      --search-fraction 1 --k 10 --queries "$data/queries.fvecs" $flag | grep '^search')
    echo "round $r ${flag:-without-payload}: $line"
  done
done

#!/usr/bin/env bash
# One harness run: octet bench, then the Python peers on the same vectors and exact
# neighbours, then the side-by-side table at matched recall.
#
#   benches/peers/run_all.sh [DATA_DIR] [OUT_DIR] [extra octet bench flags...]
#
# DATA_DIR holds base.fvecs, queries.fvecs and gt.ivecs (default ../shared/data);
# results go to OUT_DIR (default bench-out): octet.json, octet.txt, peers.json,
# compare.md. The peers' virtual environment is $PEERS_VENV (default
# /tmp/octet-peers-venv; created and filled by pip on first use). Set OCTET to an
# already built binary to skip the cargo build.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:-../shared/data}
out=${2:-bench-out}
shift $(( $# > 2 ? 2 : $# ))
venv=${PEERS_VENV:-/tmp/octet-peers-venv}
mkdir -p "$out"
if [[ -z "${OCTET:-}" ]]; then
  cargo build --release -p octet-tools
  OCTET=target/release/octet
fi
"$OCTET" bench --base "$data/base.fvecs" --queries "$data/queries.fvecs" \
  --gt "$data/gt.ivecs" --json "$out/octet.json" "$@" | tee "$out/octet.txt"
python3 benches/peers/run_peers.py --venv "$venv" --base "$data/base.fvecs" \
  --queries "$data/queries.fvecs" --gt "$data/gt.ivecs" --json "$out/peers.json"
python3 benches/peers/compare.py --octet "$out/octet.json" --peers "$out/peers.json" \
  --md "$out/compare.md"

#!/usr/bin/env bash
# dispy against Ray on this machine, in one run: builds dispy's bench (release), installs Ray into
# a virtual environment (bench/peers/.venv, once), runs W1-W4 on both with 2 slots, and prints
# each figure side by side with dispy's ratio (> 1 means dispy is ahead). Not run in CI.
#
#   bash bench/peers/compare.sh [--runs N] [--quick] [w1 w2 w3 w4]
set -euo pipefail
cd "$(dirname "$0")/../.."

runs=5
quick=()
workloads=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --quick) quick=(--quick); shift ;;
        w1|w2|w3|w4) workloads+=("$1"); shift ;;
        *) echo "usage: $0 [--runs N] [--quick] [w1 w2 w3 w4]" >&2; exit 64 ;;
    esac
done
[ ${#workloads[@]} -gt 0 ] || workloads=(w1 w2 w3 w4)

venv=bench/peers/.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "ray==2.*" numpy
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo build --quiet --release -p bench -p dispatcher -p node
echo "dispy: ${workloads[*]}" >&2
target/release/bench --no-build --json --runs "$runs" "${quick[@]}" "${workloads[@]}" > "$out/dispy.json"
echo "ray: ${workloads[*]}" >&2
"$venv/bin/python" bench/peers/ray_peer.py --runs "$runs" "${quick[@]}" "${workloads[@]}" > "$out/ray.json"
"$venv/bin/python" bench/peers/ratios.py "$out/dispy.json" "$out/ray.json"

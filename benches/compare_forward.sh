#!/usr/bin/env bash
# One cell through the 3M-shaped fixture checkpoint at the full 19,266 context on CPU:
# aido (examples/forward_cells.rs, burn-flex) vs ../shared/anchors/torch_aido.py (plain PyTorch
# with fused SDPA), interleaved in the same run. Each run prints the program's own JSON line
# (forward seconds per cell, the first values of last_hidden_state) and /usr/bin/time's
# whole-process wall time and peak RSS; docs/BENCHMARKS.md records the medians and ratios.
#   bash benches/compare_forward.sh [PYTHON] [RUNS]   (PYTHON: an interpreter with torch, safetensors)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
RUNS=${2:-3}
M=../shared/fixtures/aido_cell/aido_cell_3m_random
cargo build --release --quiet --example forward_cells
for i in $(seq 1 "$RUNS"); do
  for impl in rust python; do
    if [ $impl = rust ]; then cmd=(./target/release/examples/forward_cells "$M" "$M/cases.safetensors" 1);
    else cmd=("$PY" ../shared/anchors/torch_aido.py "$M" "$M/cases.safetensors" 1); fi
    /usr/bin/time -f "{\"impl\": \"$impl\", \"run\": $i, \"wall_s\": %e, \"max_rss_kb\": %M}" "${cmd[@]}"
  done
done

#!/usr/bin/env bash
# aido_sdk.embed (Python, on an AnnData in memory) next to `aido embed` (CLI) on the same
# 2,000-cell file and model, interleaved, with the plain-PyTorch anchor
# (../shared/anchors/torch_aido.py) on the same cells for reference. The model is 3M-shaped
# (6 layers, H 128) over a 1,000-gene panel (S = 1,002), pretrained for one update so it is
# a real checkpoint of our writer; the file is `aido simulate` counts. Whole-process wall time
# and peak RSS from /usr/bin/time; the Python side also prints the embed call alone.
#
#   bash benches/compare_embed_python.sh PYTHON_WITH_AIDO_SDK [TORCH_PYTHON] [WORKDIR] [RUNS]
set -euo pipefail
py=${1:?python of a venv with aido_sdk and anndata}
torch_py=${2:-}
work=${3:-/tmp/aido-bench-embed-py}
runs=${4:-2}
cd "$(dirname "$0")/.."
cargo build --release --quiet
aido=$PWD/target/release/aido
mkdir -p "$work"
[ -f "$work/sim.h5ad" ] || "$aido" simulate --cells 2000 --genes 1000 --cell-types 5 --seed 2 \
  --output "$work/sim.h5ad" --panel-out "$work/genes.tsv" >/dev/null
[ -d "$work/model" ] || "$aido" pretrain --data "$work/sim.h5ad" --genes "$work/genes.tsv" \
  --out "$work/model" --preset 3m --steps 1 --batch-size 4 --val-every 1 --checkpoint-every 1 --quiet >/dev/null
if [ -n "$torch_py" ] && [ ! -f "$work/cases.safetensors" ]; then
  "$aido" tokenize --input "$work/sim.h5ad" --genes "$work/genes.tsv" --output "$work/tok.safetensors" >/dev/null
  "$torch_py" -c "
from safetensors.numpy import load_file, save_file
t = load_file('$work/tok.safetensors'); save_file({'input_values': t['values']}, '$work/cases.safetensors')"
fi
t() { /usr/bin/time -f "TIME wall_s=%e peak_kb=%M" "$@"; }
for i in $(seq 1 "$runs"); do
  echo "== run $i: aido embed (CLI)"
  t "$aido" embed --model "$work/model" --input "$work/sim.h5ad" --output "$work/cli.h5ad" 2>&1 | grep -E "TIME|wrote"
  echo "== run $i: aido_sdk.embed (Python)"
  t "$py" -c "
import time, anndata as ad, aido_sdk
a = ad.read_h5ad('$work/sim.h5ad'); m = aido_sdk.load_model('$work/model')
t0 = time.perf_counter(); aido_sdk.embed(a, m, progress=False); dt = time.perf_counter() - t0
print(f'embed call {dt:.2f} s for {a.n_obs} cells ({a.n_obs / dt:.1f} cells/s)')
import numpy as np; c = ad.read_h5ad('$work/cli.h5ad').obsm['X_aido_cell']
print('bit-identical to the CLI:', np.array_equal(c, a.obsm['X_aido_cell']))" 2>&1 | grep -E "TIME|embed call|identical"
  if [ -n "$torch_py" ]; then
    echo "== run $i: torch_aido.py (PyTorch anchor, same cells, batch 1)"
    t "$torch_py" ../shared/anchors/torch_aido.py "$work/model" "$work/cases.safetensors" 2000 2>&1 | tail -2
  fi
done

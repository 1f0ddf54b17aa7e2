#!/usr/bin/env bash
# `aido perturb score` against cell-eval 0.8.2 on a screen-sized pair (60 perturbations x
# 2,000 genes x 20,000 cells, benches/python/make_score_case.py), in the same run:
#   - aido perturb score (whole command; its report's stage_seconds give the DE share),
#   - pdex (cell-eval's DE step) on the real file, at 1 and 2 numba threads,
#   - cell-eval run --profile vcc (whole command) with 2 threads.
#
#   bash benches/perturb_score.sh PYTHON [OUT=target/perturb_score_bench]
# PYTHON: an interpreter with cell-eval 0.8.2 (pip install "cell-eval==0.8.*").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$1
OUT=${2:-target/perturb_score_bench}
cargo build --release -q
mkdir -p "$OUT"
[ -f "$OUT/real.h5ad" ] || "$PY" benches/python/make_score_case.py "$OUT"
lscpu | grep "Model name" || true
date -u
CE=$(dirname "$PY")/cell-eval
/usr/bin/time -f "aido perturb score: %e s wall, %M KB" target/release/aido perturb score \
  --real "$OUT/real.h5ad" --predicted "$OUT/pred.h5ad" --report "$OUT/aido.json" --quiet
python3 -c "import json,sys; r=json.load(open('$OUT/aido.json')); print('aido stages:', {k: round(v, 2) for k, v in r['stage_seconds'].items()}, 'total', round(r['seconds'], 2))"
"$PY" benches/python/time_pdex.py "$OUT/real.h5ad" 1
"$PY" benches/python/time_pdex.py "$OUT/real.h5ad" 2
rm -rf "$OUT/ce"
/usr/bin/time -o "$OUT/ce_time.txt" -f "cell-eval run (vcc): %e s wall, %M KB" "$CE" run -ap "$OUT/pred.h5ad" -ar "$OUT/real.h5ad" \
  -o "$OUT/ce" --profile vcc --num-threads 2 >/dev/null 2>&1
cat "$OUT/ce_time.txt"
python3 - "$OUT" <<'PYEOF'
import csv, json, sys
out = sys.argv[1]
ours = json.load(open(f"{out}/aido.json"))["mean"]
ce = [r for r in csv.DictReader(open(f"{out}/ce/agg_results.csv")) if r["statistic"] == "mean"][0]
for k in ("overlap_at_N", "mae", "discrimination_score_l1"):
    print(f"{k}: aido {ours[k]:.8f}  cell-eval {float(ce[k]):.8f}")
PYEOF

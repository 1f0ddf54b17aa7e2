#!/usr/bin/env bash
# One `aido perturb benchmark` split at screen size: 60 perturbations x 2,000 genes x 20,000
# cells (`aido simulate --perturbations 60 --doubles 0 --genes 2000 --control-cells 2000
# --cells-per-condition 300 --seed 5`), GEARS learned (--no-backbone) and every baseline, with
# EPOCHS training epochs (GEARS's 20 by default; fewer to time a session-sized run: the report's
# epochs_log gives the seconds per epoch). Prints the report's stage_seconds (prepare, fit,
# predict, baselines, scoring and the Wilcoxon tests inside it) and, with PYTHON (an interpreter
# with pdex 0.3 / anndata), aido's and pdex's DE time on the same split's real cells (the test conditions and
# the controls, log-normalised as the fit does) at 1 and 2 threads.
#
#   bash benches/perturb_split_large.sh [EPOCHS=20] [OUT=target/perturb_split_large] [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-20}
OUT=${2:-target/perturb_split_large}
PY=${3:-}
[ -n "${AIDO_BIN:-}" ] || cargo build --release -q
AIDO=${AIDO_BIN:-target/release/aido}
mkdir -p "$OUT"
lscpu | grep "Model name" || true
date -u
[ -f "$OUT/screen.h5ad" ] || $AIDO simulate --perturbations 60 --doubles 0 --genes 2000 --control-cells 2000 \
  --cells-per-condition 300 --seed 5 --output "$OUT/screen.h5ad" --quiet
/usr/bin/time -f "one split: %e s wall, %M KB" $AIDO perturb benchmark --input "$OUT/screen.h5ad" \
  --out "$OUT/bench" --no-backbone --splits 1 --seed 1 --epochs "$EPOCHS" --quiet
python3 - "$OUT/bench/split_1/report.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))["settings"]
st = r["stage_seconds"]
print("stages:", {k: round(v, 1) for k, v in st.items()}, "total", round(r["seconds"], 1))
print("epochs:", [round(e["seconds"], 1) for e in r["epochs_log"]])
print(f"DE share of the split: {st['de_tests'] / r['seconds']:.1%}")
PYEOF
if [ -n "$PY" ]; then
  "$PY" benches/python/split_real_cells.py "$OUT/screen.h5ad" "$OUT/bench/split_1/predictions.json" "$OUT/real_test.h5ad"
  # aido's Wilcoxon/BH on the same file: `aido perturb score`'s stage_seconds.de_real.
  $AIDO perturb score --real "$OUT/real_test.h5ad" --predicted "$OUT/real_test.h5ad" \
    --report "$OUT/score_real.json" --quiet
  python3 -c "import json, sys; print('aido DE (de_real):', round(json.load(open(sys.argv[1]))['stage_seconds']['de_real'], 3), 's')" "$OUT/score_real.json"
  "$PY" benches/python/time_pdex.py "$OUT/real_test.h5ad" 1
  "$PY" benches/python/time_pdex.py "$OUT/real_test.h5ad" 2
fi

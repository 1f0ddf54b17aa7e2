#!/usr/bin/env bash
# GEARS (learned gene embeddings) next to the 2025 baselines on the simulator, over repeated
# GEARS simulation splits, at GEARS's learning-rate schedule and at a constant rate.
#
#   bash benches/perturb_baselines.sh [SPLITS=5] [OUT=target/perturb_baselines]
#
# Screen: `aido simulate --perturbations 60 --doubles 100 --genes 350 --seed 0` (600 control
# cells, 40 cells per condition). For seed in 1..SPLITS: `aido perturb fit --no-backbone
# --seed SEED` (the split, the initialisation and the batch order) with --lr-decay 0.5
# (GEARS's StepLR, the default) and --lr-decay 1.0. Prints a markdown table (mean ± sd over the
# splits) per test group: MSE on the top-20 DE genes, Pearson Δ, L2 on the 1,000 most expressed
# control genes, Systema's Pearson Δ against the perturbation centroid mean, centroid accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
SPLITS=${1:-5}
OUT=${2:-target/perturb_baselines}
cargo build --release -q
AIDO=target/release/aido
mkdir -p "$OUT"
SCREEN=$OUT/screen.h5ad
[ -f "$SCREEN" ] || $AIDO simulate --perturbations 60 --doubles 100 --genes 350 --seed 0 --output "$SCREEN" --quiet
lscpu | grep "Model name" || true
date -u
for decay in 0.5 1.0; do
  for seed in $(seq 1 "$SPLITS"); do
    run=$OUT/decay${decay}_seed$seed
    if [ ! -f "$run/report.json" ]; then
      /usr/bin/time -f "decay $decay seed $seed: %e s, %M KB" \
        $AIDO perturb fit --input "$SCREEN" --out "$run" --no-backbone --seed "$seed" --lr-decay "$decay" --quiet >/dev/null
    fi
  done
done
python3 benches/python/perturb_table.py "$OUT" "$SPLITS"

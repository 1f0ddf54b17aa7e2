#!/usr/bin/env bash
# `aido perturb benchmark --splits 5` on the simulator: GEARS with learned gene embeddings and
# GEARS on a pretrained encoder's gene embeddings, each next to every baseline, over GEARS
# simulation splits at seeds 1..SPLITS.
#
#   bash benches/perturb_benchmark_sim.sh [SPLITS=5] [OUT=target/perturb_benchmark_sim]
#
# Screen: `aido simulate --perturbations 60 --doubles 100 --genes 350 --seed 0` (600 control
# cells, 40 cells per condition; synthetic genes, so the perturbation graph is the co-expression
# fallback). Encoder: the tiny preset (2 blocks, H 64) pretrained on the screen's control cells
# only (`aido pretrain --preset tiny --steps 300 --batch-size 8 --lr 1e-3 --seed 1`). Every
# `perturb fit` setting at its default (GEARS's: 20 epochs, lr 1e-3 halved per epoch, hidden 64).
# Needs nothing from ../shared. Resumable (a finished split is read back).
set -euo pipefail
cd "$(dirname "$0")/.."
SPLITS=${1:-5}
OUT=${2:-target/perturb_benchmark_sim}
[ -n "${AIDO_BIN:-}" ] || cargo build --release -q
AIDO=${AIDO_BIN:-target/release/aido}
mkdir -p "$OUT"
lscpu | grep "Model name" || true
date -u
[ -f "$OUT/screen.h5ad" ] || $AIDO simulate --perturbations 60 --doubles 100 --genes 350 --seed 0 \
  --output "$OUT/screen.h5ad" --panel-out "$OUT/panel.tsv" --controls-out "$OUT/controls.h5ad" --quiet
[ -f "$OUT/bb/config.json" ] || /usr/bin/time -f "pretrain: %e s" $AIDO pretrain --input "$OUT/controls.h5ad" \
  --genes "$OUT/panel.tsv" --out "$OUT/bb" --preset tiny --steps 300 --batch-size 8 --lr 1e-3 --seed 1 --quiet
/usr/bin/time -f "benchmark, learned: %e s, %M KB" $AIDO perturb benchmark --input "$OUT/screen.h5ad" \
  --out "$OUT/learned" --no-backbone --splits "$SPLITS" --seed 1 --quiet
/usr/bin/time -f "benchmark, encoder: %e s, %M KB" $AIDO perturb benchmark --input "$OUT/screen.h5ad" \
  --out "$OUT/encoder" --model "$OUT/bb" --splits "$SPLITS" --seed 1 --quiet
python3 benches/python/benchmark_table.py "$OUT/learned/benchmark.json" "$OUT/encoder/benchmark.json"

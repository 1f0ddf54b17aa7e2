#!/usr/bin/env bash
# aido cluster --expression against scanpy's pipeline (benches/python/scanpy_cluster.py) on
# simulated counts at 20,000 and 100,000 cells × 2,000 genes, interleaved in one run; then the
# metrics alone (aido evaluate against sklearn + scib-metrics, benches/python/metrics_anchor.py)
# at 100,000 cells. Wall time and peak RSS from /usr/bin/time.
#
#   [SIZES="20000 100000"] bash benches/compare_cluster.sh PYTHON [WORKDIR]
# PYTHON: a venv with scanpy 1.11.5, scipy 1.14.1, pynndescent 0.5.13, leidenalg, scikit-learn,
# scib-metrics (SPEC-tasks: newer scipy/pynndescent break scanpy's neighbors above 4,096 cells).
set -euo pipefail
py=${1:?python of a venv with scanpy}
work=${2:-/tmp/aido-bench-cluster}
cd "$(dirname "$0")/.."
cargo build --release --quiet
aido=$PWD/target/release/aido
mkdir -p "$work"
sizes=${SIZES:-20000 100000}
for n in $sizes; do
  f="$work/sim$n.h5ad"
  [ -f "$f" ] || "$aido" simulate --cells $n --genes 2000 --cell-types 10 --batches 2 --seed 1 --output "$f"
done
t() { /usr/bin/time -f "TIME wall_s=%e peak_kb=%M" "$@"; }
for n in $sizes; do
  f="$work/sim$n.h5ad"
  echo "== aido cluster --expression, $n cells"
  t "$aido" cluster --input "$f" --output "$work/aido$n.h5ad" --expression --label-column cell_type \
    --report "$work/aido$n.json" 2>&1 | grep -E "TIME|ARI|wrote"
  echo "== scanpy, $n cells"
  t "$py" benches/python/scanpy_cluster.py "$f" cell_type 2>&1 | grep -E "TIME|tool"
done
case " $sizes " in *" 100000 "*) ;; *) exit 0 ;; esac
echo "== aido evaluate (metrics alone), 100000 cells"
t "$aido" evaluate --input "$work/aido100000.h5ad" --label-column cell_type --cluster-column aido_leiden \
  --embedding X_pca --batch-column batch --report "$work/eval100000.json" 2>&1 | grep -E "TIME"
cat "$work/eval100000.json" | head -c 400; echo
echo "== sklearn + scib-metrics (metrics alone), 100000 cells"
t "$py" benches/python/metrics_anchor.py "$work/aido100000.h5ad" cell_type aido_leiden batch 2>&1 | grep -E "TIME|ari"

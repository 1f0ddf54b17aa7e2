#!/usr/bin/env bash
# Tokenization: aido-tokenize vs the Python route (anndata + numpy), interleaved, same machine,
# same file: 10,000 simulated cells over the 19,264-gene vocabulary. Prints each run as JSON with
# peak RSS; docs/BENCHMARKS.md records the medians.
#   bash benches/compare_tokenize.sh [PYTHON]   (PYTHON: an interpreter with anndata, numpy, scipy)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
GENES=../shared/data/OS_scRNA_gene_index.19264.tsv
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cargo build --release --quiet --bin aido --example tokenize_throughput
./target/release/aido simulate --cells 10000 --cell-types 8 --seed 42 --median-umis 1500 --vocabulary "$GENES" --output "$DIR/bench.h5ad"
for i in 1 2 3; do
  for impl in rust python; do
    if [ $impl = rust ]; then cmd=(./target/release/examples/tokenize_throughput "$DIR/bench.h5ad" "$GENES");
    else cmd=("$PY" benches/python/preprocess_anchor.py "$DIR/bench.h5ad" "$GENES"); fi
    /usr/bin/time -f "{\"impl\": \"$impl\", \"run\": $i, \"wall_s\": %e, \"max_rss_kb\": %M}" "${cmd[@]}"
  done
done

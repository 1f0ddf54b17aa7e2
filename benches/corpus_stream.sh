#!/usr/bin/env bash
# Streamed pretraining corpora: peak RSS of `aido pretrain --corpus` at 10,000 and 500,000
# simulated cells (10 files of 50,000) next to `--data` on the same files, and the time of
# `aido pack`; then cells/s of streaming the packed corpus against tokenizing the h5ad files on
# the fly (examples/corpus_throughput.rs). Each run prints one JSON line; docs/BENCHMARKS.md
# records them.
#   bash benches/corpus_stream.sh [WORKDIR]   (needs ~3 GB of disk and ~4 GB of memory)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-$(mktemp -d)}
mkdir -p "$W"
cargo build --release --quiet --bin aido --example corpus_throughput
A=./target/release/aido
for i in $(seq 1 10); do
  [ -f "$W/f$i.h5ad" ] || $A simulate --cells 50000 --genes 512 --cell-types 8 --median-umis 1000 \
    --seed "$i" --output "$W/f$i.h5ad" --panel-out "$W/genes.tsv" > /dev/null
done
[ -f "$W/small.h5ad" ] || $A simulate --cells 10000 --genes 512 --cell-types 8 --median-umis 1000 \
  --seed 11 --output "$W/small.h5ad" > /dev/null
BIG=()
for i in $(seq 1 10); do BIG+=(--data "$W/f$i.h5ad"); done
timed() { # name, command...
  local name=$1; shift
  /usr/bin/time -f "{\"run\": \"$name\", \"wall_s\": %e, \"max_rss_kb\": %M}" "$@" > /dev/null
}
rm -rf "$W/c10k" "$W/c500k" "$W"/run-*
timed pack-10k $A pack --data "$W/small.h5ad" --genes "$W/genes.tsv" --out "$W/c10k"
timed pack-500k $A pack "${BIG[@]}" --genes "$W/genes.tsv" --out "$W/c500k"
FLAGS=(--preset tiny --steps 10 --batch-size 8 --val-every 10 --checkpoint-every 10 --seed 1 --quiet)
timed pretrain-corpus-10k $A pretrain --corpus "$W/c10k" --out "$W/run-c10k" "${FLAGS[@]}"
timed pretrain-corpus-500k $A pretrain --corpus "$W/c500k" --out "$W/run-c500k" "${FLAGS[@]}"
timed pretrain-data-10k $A pretrain --data "$W/small.h5ad" --genes "$W/genes.tsv" --out "$W/run-d10k" "${FLAGS[@]}"
timed pretrain-data-500k $A pretrain "${BIG[@]}" --genes "$W/genes.tsv" --out "$W/run-d500k" "${FLAGS[@]}"
F=()
for i in 1 2; do F+=("$W/f$i.h5ad"); done
rm -rf "$W/c100k"
$A pack --data "${F[0]}" --data "${F[1]}" --genes "$W/genes.tsv" --out "$W/c100k" > /dev/null
./target/release/examples/corpus_throughput --corpus "$W/c100k" --genes "$W/genes.tsv" --reps 3 "${F[@]}"

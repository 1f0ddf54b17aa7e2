#!/usr/bin/env bash
# Cells per second at the full 19,266 context on the CPU, aido (examples/forward_cells.rs) in
# f32 and bf16 next to the PyTorch anchor (../shared/anchors/torch_aido.py) in f32 and under
# `torch.autocast("cpu", dtype=torch.bfloat16)` (benches/python/torch_autocast.py), all four
# interleaved, for the 3M and 10M shapes, on real cells (the first CELLS cells of
# ../shared/data/cellxgene.h5ad, tokenized by `aido tokenize` with the built-in vocabulary).
#
# Models: the 3M-shaped fixture checkpoint (../shared/fixtures/aido_cell/aido_cell_3m_random)
# and a 10M-shaped checkpoint written by `aido pretrain --preset 10m --steps 1` (random
# weights after one update; cached in WORKDIR, ~8 min on 2 cores the first time).
#
# Per run: the program's own JSON line (forward seconds per cell, start-up and model loading
# excluded on both sides; aido's line names the attention kernel path) and /usr/bin/time's
# whole-process wall time and peak RSS. Then a thread-scaling row (3M, bf16 and autocast, at
# 1 and 2 threads), the attention op alone per kernel path (examples/bf16_attention_bench in
# aido-kernels: GFLOP/s, the exponential's share) and the CPU (lscpu model name and the
# flags that choose a path). docs/BENCHMARKS.md records one run.
#
#   bash benches/compare_throughput.sh PYTHON [CELLS] [WORKDIR]
#   (PYTHON: an interpreter with torch and safetensors; CELLS default 8)
set -euo pipefail
py=${1:?python with torch and safetensors}
cells=${2:-8}
work=${3:-/tmp/aido-throughput}
cd "$(dirname "$0")/.."
shared=../shared
m3=$shared/fixtures/aido_cell/aido_cell_3m_random
anchor=$shared/anchors/torch_aido.py
cargo build --release --quiet --bin aido --example forward_cells
cargo build --release --quiet -p aido-kernels --example bf16_attention_bench
aido=$PWD/target/release/aido
fwd=$PWD/target/release/examples/forward_cells
mkdir -p "$work"

echo "== machine"
lscpu | grep -E "Model name|^CPU\(s\)|Thread\(s\) per core"
echo "flags: $(grep -o -w -E 'avx2|fma|avx512f|avx512_bf16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
"$py" -c "import torch; print('torch', torch.__version__, 'cpu capability', torch.backends.cpu.get_cpu_capability(), 'threads', torch.get_num_threads())"
date -u +"date %Y-%m-%d %H:%M UTC"

if [ ! -f "$work/cases.safetensors" ]; then
  "$aido" tokenize --input $shared/data/cellxgene.h5ad --output "$work/tok.safetensors" >/dev/null
  "$py" -c "
from safetensors.numpy import load_file, save_file
t = load_file('$work/tok.safetensors')
save_file({'input_values': t['values'][:$cells].copy()}, '$work/cases.safetensors')"
fi
if [ ! -f "$work/model10m/model.safetensors" ]; then
  "$aido" pretrain --data $shared/data/cellxgene.h5ad --genes aido-pipeline/data/OS_scRNA_gene_index.19264.tsv \
    --out "$work/model10m" --preset 10m --steps 1 --batch-size 1 --val-every 1 --checkpoint-every 1 --quiet >/dev/null
fi

t() { /usr/bin/time -f "TIME wall_s=%e peak_kb=%M" "$@" 2>&1 | grep -E '^\{|TIME'; }
run() { # shape model impl [threads]
  local shape=$1 model=$2 impl=$3 th=${4:-}
  echo "-- $shape $impl${th:+ threads=$th}"
  case $impl in
    aido-f32) t env ${th:+RAYON_NUM_THREADS=$th} "$fwd" "$model" "$work/cases.safetensors" "$cells" f32 ;;
    aido-bf16) t env ${th:+RAYON_NUM_THREADS=$th} "$fwd" "$model" "$work/cases.safetensors" "$cells" bf16 ;;
    torch-f32) t "$py" "$anchor" "$model" "$work/cases.safetensors" "$cells" ${th:+--threads $th} ;;
    torch-bf16) t "$py" benches/python/torch_autocast.py "$anchor" "$model" "$work/cases.safetensors" "$cells" ${th:+--threads $th} ;;
  esac
}

echo "== cells per second, $cells cells, interleaved"
for shape in 3m 10m; do
  model=$m3; [ $shape = 10m ] && model=$work/model10m
  for impl in aido-f32 aido-bf16 torch-f32 torch-bf16; do run $shape "$model" $impl; done
done

echo "== thread scaling (3M)"
for th in 1 2; do
  for impl in aido-bf16 torch-bf16; do run 3m $m3 $impl $th; done
done

echo "== the attention op alone (one cell: bh = heads; 3M and 10M both have head_dim 32)"
for bh in 4 8; do
  ./target/release/examples/bf16_attention_bench --seq 19266 --bh $bh --dims 32 --reps 3
done

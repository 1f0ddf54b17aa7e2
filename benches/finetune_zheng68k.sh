#!/usr/bin/env bash
# Cell-type annotation on zheng68k (165 PBMCs, 11 types × 15) — docs/BENCHMARKS.md, "Cell-type
# annotation". A 3M-shape model pretrained with `aido pretrain` on a 512-gene panel (150 updates),
# fine-tuned with last:1 (the paper) with and without the frozen-prefix cache, a linear probe,
# and the expression baselines on the same split; then the full-context cost (S = 19,266, the 3M
# random-weight fixture) on 33 cells with a split column.
#
#   bash benches/finetune_zheng68k.sh PYTHON [WORKDIR]     (PYTHON: a venv with anndata)
set -euo pipefail
py=${1:?python with anndata}
work=${2:-/tmp/aido-bench-finetune}
cd "$(dirname "$0")/.."
root=$PWD
shared=${AIDO_SHARED_DIR:-$root/../shared}
z=$shared/data/zheng68k.h5ad
cargo build --release --quiet
aido=$root/target/release/aido
mkdir -p "$work" && cd "$work"
t() { /usr/bin/time -f "TIME wall_s=%e peak_kb=%M" "$@"; }
cargo run --release --quiet --manifest-path "$root/Cargo.toml" --example gene_panel -- \
  --vocab "$shared/data/OS_scRNA_gene_index.19264.tsv" --top 512 --out real_panel.tsv "$z" "$shared/data/cellxgene.h5ad"
printf 'val_fraction = 0.15\n' > real.toml
[ -f run/model.safetensors ] || t "$aido" pretrain --data "$z" --data "$shared/data/cellxgene.h5ad" --genes real_panel.tsv \
  --out run --preset 3m --steps 150 --batch-size 16 --lr 1e-3 --seed 0 --val-every 50 --checkpoint-every 50 --config real.toml 2>&1 | grep -E "done|TIME"
for v in cache nocache; do
  extra=""; [ $v = nocache ] && extra="--no-cache"
  rm -rf ft_$v
  t "$aido" finetune --model run --input "$z" --label-column celltype --out ft_$v --trainable last:1 --epochs 20 --baselines $extra 2>&1 | grep -E "^test|^baseline|TIME"
done
for p in max present-mean; do
  rm -rf ft_frozen_$p
  "$aido" finetune --model run --input "$z" --label-column celltype --out ft_frozen_$p --trainable frozen --pooling $p --epochs 30 --patience 0 2>&1 | grep -E "^test"
  rm -rf ft_frozen_nobn_$p
  "$aido" finetune --model run --input "$z" --label-column celltype --out ft_frozen_nobn_$p --trainable frozen --pooling $p --epochs 30 --patience 0 --no-batch-norm 2>&1 | grep -E "^test"
done
# full context: 3 cells per type, split train/val/test one each
"$py" "$root/benches/python/zheng_fullcontext_subset.py" "$z" zheng33.h5ad > /dev/null
for v in cache nocache; do
  extra=""; [ $v = nocache ] && extra="--no-cache"
  rm -rf fc_$v
  t "$aido" finetune --model "$shared/fixtures/aido_cell/aido_cell_3m_random" --genes "$shared/data/OS_scRNA_gene_index.19264.tsv" \
    --input zheng33.h5ad --label-column celltype --split-column split --out fc_$v --trainable last:1 --epochs 2 --patience 0 $extra 2>&1 | grep -E "^test|TIME|epoch +[0-9]+:"
done
"$py" - <<'PY'
import json, statistics as st
for d in ["ft_cache", "ft_nocache", "ft_frozen_max", "ft_frozen_present-mean", "ft_frozen_nobn_max", "ft_frozen_nobn_present-mean", "fc_cache", "fc_nocache"]:
    r = json.load(open(f"{d}/report.json"))
    ep = [e["seconds"] for e in r["epochs"]]
    print(d, "test macro-F1 %.3f accuracy %.3f" % (r["test"]["macro_f1"], r["test"]["accuracy"]),
          "best epoch", r["best_epoch"], "median epoch s %.2f" % st.median(ep),
          "cache s %.1f" % r["cache"]["seconds"], "n_train", r["n_train"], "total s %.1f" % r["seconds"])
    if r.get("baselines"):
        print("  baselines", {k: round(r["baselines"][k]["macro_f1"], 3) for k in ("logreg_pca", "knn_pca")})
PY

"""The small labelled file of the full-context fine-tuning benchmark (benches/finetune_zheng68k.sh):
3 cells of each of zheng68k's 11 types, with obs/split = train, val, test (one of each per type).

    python benches/python/zheng_fullcontext_subset.py ../shared/data/zheng68k.h5ad OUT.h5ad
"""
import sys
import anndata as ad

a = ad.read_h5ad(sys.argv[1])
keep, split = [], []
for t in sorted(a.obs["celltype"].unique()):
    idx = [i for i, v in enumerate(a.obs["celltype"]) if v == t][:3]
    keep += idx
    split += ["train", "val", "test"]
b = a[keep].copy()
b.obs["split"] = split
b.write_h5ad(sys.argv[2])
print(b)

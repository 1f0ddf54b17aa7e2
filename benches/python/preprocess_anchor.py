"""Anchor for the tokenization benchmark: the authors' Python route, written from SPEC-model §1-2
(anndata read -> align to the gene list by symbol with zero-fill -> float32 log1p(c/total*1e4),
depth tokens max(log10 total, 5)). Prints one JSON line with cells/s.

    python3 -m venv ~/anchorenv && ~/anchorenv/bin/pip install anndata numpy scipy
    ~/anchorenv/bin/python benches/python/preprocess_anchor.py FILE.h5ad GENES.tsv
"""
import json, sys, time
import numpy as np, anndata as ad

t0 = time.perf_counter()
path, genes_tsv = sys.argv[1], sys.argv[2]
genes = [l.split("\t")[0] for l in open(genes_tsv).read().splitlines()[1:]]
a = ad.read_h5ad(path)
# align_adata: keep the data's genes that are in the list (first occurrence), zero-fill the rest
pos = {g: i for i, g in enumerate(genes)}
src_idx, dst_idx, seen = [], [], set()
for j, g in enumerate(a.var_names):
    if g in pos and g not in seen:
        seen.add(g); src_idx.append(j); dst_idx.append(pos[g])
X = a.X[:, src_idx]
X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
aligned = np.zeros((a.n_obs, len(genes)), dtype=np.float32)
aligned[:, dst_idx] = X.astype(np.float32)
# preprocess_counts
tot = aligned.sum(1, keepdims=True, dtype=np.float32)
vals = np.log1p((aligned / tot) * np.float32(1e4))
depth = np.maximum(np.log10(tot), np.float32(5.0))
out = np.minimum(np.concatenate([vals, depth, depth], 1), np.float32(20.0))
dt = time.perf_counter() - t0
print(json.dumps({"anchor": "python anndata+numpy", "cells": int(a.n_obs), "seconds": dt,
                  "cells_per_s": a.n_obs / dt, "checksum": float(out[:, -1].sum())}))

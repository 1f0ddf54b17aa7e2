"""A screen-sized real / predicted pair for timing `aido perturb score` against cell-eval.

60 perturbations x 2,000 genes x 20,000 cells (2,000 non-targeting controls, 300 cells per
perturbation), X = log1p of Poisson counts (float32 CSR; many ties and zeros, as real data), the
perturbation shifting 40 genes each; the prediction the same design with other effects.
Generated data, seed 11.

usage: python make_score_case.py OUTDIR
"""

import pathlib
import sys

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(11)
G, P, n_ctrl, n_per = 2000, 60, 2000, 300
genes = [f"GENE{i:04d}" for i in range(G)]
base = rng.gamma(0.6, 1.0, G)
targets = rng.choice(G, P, replace=False)


def make(effect_seed):
    r = np.random.default_rng(effect_seed)
    blocks, labels = [], []
    lam = np.tile(base, (n_ctrl, 1))
    blocks.append(r.poisson(lam))
    labels += ["non-targeting"] * n_ctrl
    for p in range(P):
        fold = np.ones(G)
        hit = r.choice(G, 40, replace=False)
        fold[hit] = r.choice([0.3, 2.5], 40)
        fold[targets[p]] = 0.2
        blocks.append(r.poisson(np.tile(base * fold, (n_per, 1))))
        labels += [genes[targets[p]]] * n_per
    x = sp.csr_matrix(np.log1p(np.vstack(blocks)).astype(np.float32))
    a = ad.AnnData(X=x, obs=pd.DataFrame({"target_gene": pd.Categorical(labels)},
                                         index=[f"c{i}" for i in range(len(labels))]),
                   var=pd.DataFrame(index=genes))
    return a


make(1).write_h5ad(out / "real.h5ad")
make(2).write_h5ad(out / "pred.h5ad")
print("wrote", out / "real.h5ad", out / "pred.h5ad")

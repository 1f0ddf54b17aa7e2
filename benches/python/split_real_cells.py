"""The real cells a `perturb fit` split tests, as cell-eval / pdex take them: the control cells
and the test conditions' cells of SCREEN.h5ad (raw counts, obs `condition`), log-normalised as
the fit does (ln(1 + count / total * 1e4)), obs `target_gene` (`A` for `A+ctrl`, `A+B`,
`non-targeting` for the control). The test conditions are read from the fit's predictions.json.

usage: python split_real_cells.py SCREEN.h5ad PREDICTIONS.json OUT.h5ad
"""

import json
import sys

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

screen, preds, out = sys.argv[1:4]
a = ad.read_h5ad(screen)
test = {c for c, v in json.load(open(preds))["conditions"].items() if v["split"] == "test"}
cond = a.obs["condition"].astype(str)
keep = (cond == "ctrl") | cond.isin(test)
a = a[keep.values].copy()
x = sp.csr_matrix(a.X, dtype=np.float64)
tot = np.asarray(x.sum(axis=1)).ravel()
x = sp.diags(1e4 / tot) @ x
x.data = np.log1p(x.data)
labels = [
    "non-targeting" if c == "ctrl" else "+".join(g for g in c.split("+") if g != "ctrl")
    for c in a.obs["condition"].astype(str)
]
b = ad.AnnData(X=x.astype(np.float32).tocsr(), obs=pd.DataFrame({"target_gene": labels}, index=a.obs_names),
               var=a.var)
b.write_h5ad(out)
print(f"{out}: {b.n_obs} cells ({sum(l == 'non-targeting' for l in labels)} controls), "
      f"{len(set(labels)) - 1} test conditions, {b.n_vars} genes")

"""Writes aido-tokenize/tests/data/anndata_full.h5ad with anndata (version recorded in uns):
a small file holding every kind of AnnData object (X, layers, raw, obs/var columns of each
dtype, obsm, varm, obsp, varp, nested uns), so the "input plus results" writer is tested on a
file it did not write. Run once: python tools/reference/make_anndata_full.py"""
import importlib.metadata as md
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad
rng = np.random.default_rng(7)
n, g = 30, 20
X = sp.csr_matrix(rng.poisson(1.0, (n, g)).astype(np.float32))
obs = pd.DataFrame({
    "cell_type": pd.Categorical(rng.choice(["B", "T", "NK"], n)),
    "donor": rng.choice(["d1", "d2"], n),
    "n_counts": np.asarray(X.sum(1)).ravel().astype(np.float64),
    "n_genes": np.asarray((X > 0).sum(1)).ravel().astype(np.int64),
    "is_doublet": rng.random(n) < 0.1,
    "nullable_int": pd.array([1, None] * (n // 2), dtype="Int64"),
}, index=[f"cell{i}" for i in range(n)])
var = pd.DataFrame({"gene_ids": [f"ENSG{i:011d}" for i in range(g)], "mt": [False] * g}, index=[f"G{i}" for i in range(g)])
A = ad.AnnData(X=X, obs=obs, var=var)
A.layers["counts"] = X.copy()
A.layers["dense"] = X.toarray() * 2
A.raw = A.copy()
A.obsm["X_old"] = rng.normal(size=(n, 3)).astype(np.float32)
A.varm["PCs"] = rng.normal(size=(g, 2))
A.obsp["distances"] = sp.random(n, n, density=0.1, format="csr", random_state=1)
A.varp["corr"] = np.eye(g)
A.uns["nested"] = {"a": 1, "b": "text", "c": np.arange(3), "d": {"e": 2.5}}
A.uns["cell_type_colors"] = np.array(["#ff0000", "#00ff00", "#0000ff"])
A.uns["written_by"] = f"anndata {md.version('anndata')}"
A.write_h5ad("aido-tokenize/tests/data/anndata_full.h5ad")
print("written")

"""Writes aido-tokenize/tests/data/nullable_obs.h5ad with anndata: 12 cells x 4 genes whose obs
holds pandas nullable columns with missing values (Int64, boolean, string), every third cell
missing, so the readers and writers are tested on anndata's own `nullable-*` encodings.
Run once: python tools/reference/make_nullable_obs.py"""
import importlib.metadata as md
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad
n = 12
ad.settings.allow_write_nullable_strings = True
missing = [i % 3 == 1 for i in range(n)]
obs = pd.DataFrame({
    "n_int": pd.array([None if m else 10 * i for i, m in enumerate(missing)], dtype="Int64"),
    "n_bool": pd.array([None if m else i % 2 == 0 for i, m in enumerate(missing)], dtype="boolean"),
    "n_str": pd.array([None if m else f"s{i}" for i, m in enumerate(missing)], dtype="string"),
}, index=[f"cell{i}" for i in range(n)])
X = sp.csr_matrix(np.arange(n * 4, dtype=np.float32).reshape(n, 4) % 5)
A = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(4)]))
A.uns["written_by"] = f"anndata {md.version('anndata')}"
A.write_h5ad("aido-tokenize/tests/data/nullable_obs.h5ad", convert_strings_to_categoricals=False)
print("written", md.version("anndata"))

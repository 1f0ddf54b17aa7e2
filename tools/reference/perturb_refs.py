"""Reference values for aido-tasks' perturbation module, computed once with GEARS's own code,
numpy and scanpy (never with aido).

What it pins (written to aido-tasks/tests/reference/perturb_refs.json):
  * numpy's legacy RandomState (MT19937): `np.random.seed(s); np.random.permutation(n)` and
    `np.random.randint(0, n, k)` — the two draws GEARS's splits are made of;
  * GEARS's `DataSplitter` (cell-gears 0.1.2, gears/data_utils.py) on a small known condition list:
    the `simulation` split (seed 1 and 7, train_gene_set_size 0.75, combo_seen2_train_frac 0.75) with
    its test and validation subgroups, and the `combo_seen0/1/2` splits (test_size 0.1, seed 1);
  * scanpy 1.11.5 `sc.tl.rank_genes_groups(method="t-test", reference=ctrl, rankby_abs=True)` on a
    small log-normalized matrix: gene order and scores per condition;
  * GEARS's co-expression graph (`get_coexpression_network_from_train`: Pearson over the training
    conditions that contain 'ctrl', |r| > 0.4, the 5 + 1 largest per target) on a small matrix;
  * the top-20-DE MSE and Pearson-of-deltas of a given prediction, with numpy.

Run: pip download cell-gears==0.1.2 --no-deps -d /tmp/w && unzip -q /tmp/w/*.whl -d /tmp/gearsx
     python tools/reference/perturb_refs.py /tmp/gearsx > aido-tasks/tests/reference/perturb_refs.json
Environment used: Python 3.11, numpy 2.2.6, pandas, scanpy 1.11.5, anndata.
"""
import json
import sys
import types

import numpy as np

# gears/utils.py imports heavy packages at module level that DataSplitter never uses; stub them.
for name in ["torch", "torch.optim", "networkx", "torch_geometric", "torch_geometric.data", "dcor", "requests"]:
    m = types.ModuleType(name)
    sys.modules[name] = m
sys.modules["torch_geometric.data"].Data = object
sys.modules["dcor"].distance_correlation = None
sys.path.insert(0, sys.argv[1])
import importlib  # noqa: E402

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402
import scanpy as sc  # noqa: E402

# Load gears.utils and gears.data_utils without gears/__init__.py (which imports torch).
pkg = types.ModuleType("gears")
pkg.__path__ = [sys.argv[1] + "/gears"]
sys.modules["gears"] = pkg
data_utils = importlib.import_module("gears.data_utils")

out = {}

# --- numpy legacy RNG draws -------------------------------------------------------------------
rng_cases = []
for seed, n in [(1, 10), (1, 1), (7, 37), (12345, 200), (0, 3)]:
    np.random.seed(seed)
    perm = np.random.permutation(n).tolist()
    np.random.seed(seed)
    ints = np.random.randint(0, n, 25).tolist()
    rng_cases.append({"seed": seed, "n": n, "permutation": perm, "randint": ints})
out["numpy_rng"] = rng_cases

# --- GEARS splits -----------------------------------------------------------------------------
genes = [f"G{i:02d}" for i in range(24)]
rs = np.random.RandomState(3)
conds = [f"{g}+ctrl" for g in genes]
pairs = set()
while len(pairs) < 40:
    a, b = rs.choice(len(genes), 2, replace=False)
    pairs.add((min(a, b), max(a, b)))
conds += [f"{genes[a]}+{genes[b]}" for a, b in sorted(pairs)]
rs.shuffle(conds)
conds = ["ctrl"] + conds  # order of first appearance in obs


def adata_of(conditions):
    obs = pd.DataFrame({"condition": conditions}, index=[f"c{i}" for i in range(len(conditions))])
    return ad.AnnData(X=np.zeros((len(conditions), 1), dtype=np.float32), obs=obs)


splits = []
for seed in [1, 7]:
    a = adata_of(conds)
    ds = data_utils.DataSplitter(a, split_type="simulation")
    a, sub = ds.split_data(train_gene_set_size=0.75, combo_seen2_train_frac=0.75, seed=seed)
    splits.append({
        "split": "simulation", "seed": seed,
        "assignment": dict(zip(a.obs["condition"], a.obs["split"])),
        "test_subgroup": {k: sorted(v) for k, v in sub["test_subgroup"].items()},
        "val_subgroup": {k: sorted(v) for k, v in sub["val_subgroup"].items()},
    })
for seen in [0, 1, 2]:
    a = adata_of(conds)
    ds = data_utils.DataSplitter(a, split_type="combo", seen=seen)
    a = ds.split_data(test_size=0.1, seed=1)
    assign = {c: (s if isinstance(s, str) else None) for c, s in zip(a.obs["condition"], a.obs["split"])}
    splits.append({"split": f"combo_seen{seen}", "seed": 1, "assignment": assign})
out["conditions"] = conds
out["splits"] = splits

# --- DE ranking (scanpy t-test, |t|) and the metric ------------------------------------------
rs = np.random.RandomState(11)
n_genes = 30
groups = {"ctrl": 40, "A+ctrl": 12, "A+B": 9}
rows, labels = [], []
for gname, n in groups.items():
    mu = rs.gamma(2.0, 1.0, n_genes)
    if gname != "ctrl":
        mu = mu * np.exp(rs.normal(0, 0.6, n_genes))
    counts = rs.poisson(mu * 3, size=(n, n_genes)).astype(np.float64)
    counts[:, 0] += 1  # no empty cells
    rows.append(counts)
    labels += [gname] * n
counts = np.vstack(rows)
lognorm = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
a = ad.AnnData(X=lognorm.astype(np.float64),
               obs=pd.DataFrame({"condition": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))]),
               var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
sc.tl.rank_genes_groups(a, groupby="condition", reference="ctrl", method="t-test",
                        rankby_abs=True, n_genes=n_genes, use_raw=False)
de = {}
for g in ["A+ctrl", "A+B"]:
    names = [int(x[1:]) for x in a.uns["rank_genes_groups"]["names"][g]]
    scores = [float(x) for x in a.uns["rank_genes_groups"]["scores"][g]]
    de[g] = {"order": names, "scores": scores}
ctrl_mean = lognorm[np.array(labels) == "ctrl"].mean(0)
pred = {g: (ctrl_mean + rs.normal(0, 0.3, n_genes)).tolist() for g in ["A+ctrl", "A+B"]}
metric = {}
for g in ["A+ctrl", "A+B"]:
    top = np.array(de[g]["order"][:20])
    truth = lognorm[np.array(labels) == g].mean(0)
    p = np.array(pred[g])
    metric[g] = {
        "mse_top20_de": float(np.mean((p[top] - truth[top]) ** 2)),
        "pearson_delta": float(np.corrcoef(p[top] - ctrl_mean[top], truth[top] - ctrl_mean[top])[0, 1]),
    }
out["de"] = {"counts": counts.tolist(), "labels": labels, "ranking": de, "prediction": pred, "metric": metric}

# --- co-expression graph: GEARS's get_coexpression_network_from_train on a small matrix -------
import tempfile  # noqa: E402

import scipy.sparse as sp  # noqa: E402

gears_utils = importlib.import_module("gears.utils")
rs = np.random.RandomState(5)
n_cells, n_g = 60, 25
programs = rs.normal(0, 1, (n_cells, 3))
loading = rs.normal(0, 1, (3, n_g)) * (rs.uniform(size=(3, n_g)) < 0.4)
expr = np.maximum(programs @ loading + rs.normal(0, 0.7, (n_cells, n_g)) + 1.0, 0.0)
cond_cells = ["ctrl"] * 40 + ["G1+ctrl"] * 10 + ["G2+G3"] * 10
gad = ad.AnnData(X=sp.csr_matrix(expr), obs=pd.DataFrame({"condition": cond_cells}, index=[f"c{i}" for i in range(n_cells)]),
                 var=pd.DataFrame({"gene_name": [f"x{i}" for i in range(n_g)]}, index=[f"x{i}" for i in range(n_g)]))
with tempfile.TemporaryDirectory() as d:
    import os
    os.makedirs(os.path.join(d, "toy"))
    df = gears_utils.get_coexpression_network_from_train(gad, 0.4, 5, d, "toy", "simulation", 1, 0.75,
                                                         {"train": ["ctrl", "G1+ctrl", "G2+G3"]})
out["coexpression"] = {
    "expression": expr.tolist(), "conditions": cond_cells, "threshold": 0.4, "k": 5,
    "edges": [[int(r.source[1:]), int(r.target[1:]), float(r.importance)] for r in df.itertuples()],
}
json.dump(out, sys.stdout, indent=1)

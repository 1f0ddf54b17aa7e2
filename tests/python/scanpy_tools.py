"""scanpy's own tools on the files aido writes.

scanpy 1.11's `tl.umap`, `tl.leiden`, `tl.draw_graph` ("Output dtype not compatible with
inputs"), `tl.paga`, `tl.diffmap` ("Buffer dtype mismatch, expected 'int32_t' but got 'long'")
and `tl.rank_genes_groups` failed on `aido cluster` / `aido simulate` outputs while their sparse
matrices carried int64 index arrays and float32 distances. scanpy's `pp.neighbors` writes int32
`indices`/`indptr`, float32 connectivities and float64 distances: this script checks those
encodings and runs the tools. Run by `.ci/run` in a virtual environment with scanpy.

usage: python scanpy_tools.py AIDO_BINARY WORKDIR
"""

import pathlib
import subprocess
import sys

import numpy as np
import scanpy as sc

aido, work = sys.argv[1], pathlib.Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
sim = work / "sim.h5ad"
run = lambda *a: subprocess.run([aido, *map(str, a)], check=True, stdout=subprocess.DEVNULL)
run("simulate", "--cells", 300, "--genes", 500, "--cell-types", 4, "--batches", 2, "--output", sim)
out = work / "clusters.h5ad"
run("cluster", "--input", sim, "--output", out, "--expression", "--label-column", "cell_type")

a = sc.read_h5ad(out)
for key in ("connectivities", "distances"):
    m = a.obsp[key]
    assert m.indptr.dtype == np.int32 and m.indices.dtype == np.int32, (key, m.indptr.dtype, m.indices.dtype)
assert a.obsp["connectivities"].dtype == np.float32, a.obsp["connectivities"].dtype
assert a.obsp["distances"].dtype == np.float64, a.obsp["distances"].dtype
assert a.uns["neighbors"]["connectivities_key"] == "connectivities"

# The colours aido drew are the ones scanpy would assign (category order, scanpy's default
# palette for that many categories), stored where sc.pl.umap reads them; the HVG flavour is
# where sc.pl.highly_variable_genes reads it.
from scanpy.plotting import _utils as pl_utils

for key in ("aido_leiden", "cell_type"):
    ours = list(a.uns[f"{key}_colors"])
    fresh = a.copy()
    del fresh.uns[f"{key}_colors"]
    pl_utils._set_default_colors_for_categorical_obs(fresh, key)
    assert ours == list(fresh.uns[f"{key}_colors"]), (key, ours, list(fresh.uns[f"{key}_colors"]))
assert a.uns["hvg"]["flavor"] == "seurat"
sc.pl.highly_variable_genes(a, show=False)

sc.tl.umap(a)
sc.tl.leiden(a, flavor="igraph", n_iterations=2, key_added="leiden_scanpy")
sc.tl.paga(a, groups="aido_leiden")
sc.tl.diffmap(a)
sc.tl.draw_graph(a)
sc.pl.umap(a, color="aido_leiden", show=False)

x = sc.read_h5ad(sim)
assert x.X.indptr.dtype == np.int32 and x.X.indices.dtype == np.int32, x.X.indptr.dtype
sc.pp.normalize_total(x)
sc.pp.log1p(x)
sc.tl.rank_genes_groups(x, "cell_type", method="wilcoxon")

# --n-top-genes selects the genes scanpy selects with n_top_genes (seurat flavour, on
# normalize_total(1e4) + log1p); --scale-max is recorded in the report.
top = work / "top.h5ad"
report = work / "top.json"
run("cluster", "--input", sim, "--output", top, "--expression", "--n-top-genes", 100,
    "--scale-max", 10, "--report", report)
t = sc.read_h5ad(top)
ref = sc.read_h5ad(sim)
sc.pp.normalize_total(ref, target_sum=1e4)
sc.pp.log1p(ref)
sc.pp.highly_variable_genes(ref, flavor="seurat", n_top_genes=100)
assert (t.var["highly_variable"].values == ref.var["highly_variable"].values).all()
import json
settings = json.loads(report.read_text())["settings"]
assert settings["n_top_genes"] == 100 and settings["scale_max"] == 10, settings

# --use-rep-as-is builds the graph on the embedding itself, as sc.pp.neighbors(use_rep=...) does:
# the same distances and connectivities, recorded under the key, and no X_pca of ours.
e = sc.read_h5ad(out)
e.obsm["X_emb"] = np.ascontiguousarray(e.obsm["X_pca"][:, :10])
del e.obsm["X_pca"]
emb_in, emb_out = work / "emb_in.h5ad", work / "emb_out.h5ad"
e.write_h5ad(emb_in)
run("cluster", "--input", emb_in, "--output", emb_out, "--embedding", "X_emb", "--use-rep-as-is")
ours = sc.read_h5ad(emb_out)
assert "X_pca" not in ours.obsm and ours.uns["neighbors"]["params"]["use_rep"] == "X_emb"
ref = sc.read_h5ad(emb_in)
sc.pp.neighbors(ref, use_rep="X_emb", n_neighbors=15)
for key in ("distances", "connectivities"):
    diff = abs(ours.obsp[key] - ref.obsp[key]).max()
    assert diff < 1e-4, (key, diff)

# --key-added: scanpy's own tools find every result by the names scanpy's key_added gives.
keyed = work / "keyed.h5ad"
run("cluster", "--input", out, "--output", keyed, "--embedding", "X_pca", "--n-pcs", 10,
    "--key-added", "emb", "--resolution", 0.5)
k = sc.read_h5ad(keyed)
assert k.uns["emb_neighbors"]["connectivities_key"] == "emb_neighbors_connectivities"
assert k.uns["emb_neighbors"]["params"]["use_rep"] == "emb_pca" and k.obsm["emb_pca"].shape[1] == 10
assert list(k.obs["aido_leiden"]) == list(a.obs["aido_leiden"]), "the default names are kept"
ours = list(k.uns["emb_colors"])
fresh = k.copy()
del fresh.uns["emb_colors"]
pl_utils._set_default_colors_for_categorical_obs(fresh, "emb")
assert ours == list(fresh.uns["emb_colors"]), ours
sc.pl.embedding(k, basis="emb_umap", color="emb", show=False)
sc.tl.leiden(k, flavor="igraph", n_iterations=2, neighbors_key="emb_neighbors", key_added="leiden_emb")
sc.tl.umap(k, neighbors_key="emb_neighbors")
sc.tl.paga(k, groups="emb", neighbors_key="emb_neighbors")
ref = sc.read_h5ad(out)
ref.obsm["emb_pca"] = k.obsm["emb_pca"]
sc.pp.neighbors(ref, use_rep="emb_pca", n_neighbors=15, key_added="emb_neighbors")
for key in ("emb_neighbors_distances", "emb_neighbors_connectivities"):
    diff = abs(k.obsp[key] - ref.obsp[key]).max()
    assert diff < 1e-4, (key, diff)

# scanpy's usual layout: X log-normalized, the counts in adata.raw. The expression baseline
# refuses X naming raw/X, and --use-raw clusters the counts as the counts file clusters.
r = sc.read_h5ad(sim)
r.raw = r.copy()
sc.pp.normalize_total(r)
sc.pp.log1p(r)
raw_file = work / "with_raw.h5ad"
r.write_h5ad(raw_file)
refused = subprocess.run([aido, "cluster", "--input", raw_file, "--output", work / "r.h5ad", "--expression"],
                         capture_output=True, text=True)
assert refused.returncode != 0 and "raw/X holds counts (read it with --use-raw)" in refused.stderr, refused.stderr
run("cluster", "--input", raw_file, "--output", work / "r.h5ad", "--expression", "--use-raw",
    "--label-column", "cell_type")
assert list(sc.read_h5ad(work / "r.h5ad").obs["aido_leiden"].astype(str)) == list(a.obs["aido_leiden"].astype(str))

# A 10x input embedded into an h5ad is a whole AnnData: X = the counts read, var = the genes,
# obs = the barcodes (it used to have no genes). Two cells of the 3M fixture at full context.
testdata = pathlib.Path(__file__).resolve().parents[2] / "testdata"
tenx = testdata / "data" / "10x_v3_filtered_feature_bc_matrix.h5"
emb = work / "tenx.h5ad"
run("embed", "--model", testdata / "fixtures" / "aido_cell" / "aido_cell_3m_random", "--input", tenx,
    "--output", emb, "--max-cells", 2, "--quiet")
e = sc.read_h5ad(emb)
ref = sc.read_10x_h5(tenx)[:2]
assert e.shape == ref.shape, (e.shape, ref.shape)
assert list(e.obs_names) == list(ref.obs_names)
assert list(e.var_names) == list(ref.var_names)
assert (e.X != ref.X).nnz == 0
assert e.obsm["X_aido_cell"].shape == (2, 128)

from importlib.metadata import version

print("scanpy", version("scanpy"), ": umap, leiden, paga, diffmap, draw_graph, pl.umap, pl.highly_variable_genes and rank_genes_groups ran on aido's outputs; uns colours are scanpy's")

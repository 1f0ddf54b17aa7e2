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

from importlib.metadata import version

print("scanpy", version("scanpy"), ": umap, leiden, paga, diffmap, draw_graph, pl.umap and rank_genes_groups ran on aido's outputs")

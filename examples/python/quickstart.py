"""aido_sdk in a notebook's five steps: data → model → embed → cluster → UMAP.

    python examples/python/quickstart.py [MODEL] [DATA.h5ad] [OUT_DIR]

MODEL: a checkpoint folder or a Hugging Face id (default: genbio-ai/AIDO.Cell-3M, found in or
downloaded into the huggingface_hub cache). DATA: raw counts with obs["cell_type"] (default:
counts simulated here with `aido simulate` when the binary is at hand). Prints the ARI of the
clusters against the cell types and saves the UMAP to OUT_DIR/umap.png.
"""

import os
import pathlib
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import anndata as ad  # noqa: E402
import scanpy as sc  # noqa: E402

import aido_sdk  # noqa: E402

model_id = sys.argv[1] if len(sys.argv) > 1 else "genbio-ai/AIDO.Cell-3M"
out = pathlib.Path(sys.argv[3] if len(sys.argv) > 3 else "aido-quickstart")
out.mkdir(parents=True, exist_ok=True)
if len(sys.argv) > 2:
    data = pathlib.Path(sys.argv[2])
else:
    data = out / "sim.h5ad"
    aido = os.environ.get("AIDO_BIN", "aido")
    subprocess.run([aido, "simulate", "--cells", "300", "--genes", "400", "--cell-types", "4",
                    "--output", str(data)], check=True, stdout=subprocess.DEVNULL)

adata = ad.read_h5ad(data)                                   # raw counts in X
model = aido_sdk.load_model(model_id)
aido_sdk.embed(adata, model)                                 # → adata.obsm["X_aido_cell"]
report = aido_sdk.cluster(adata, use_rep="X_aido_cell", label_column="cell_type")
sc.pl.umap(adata, color=["cell_type", "aido_leiden"], show=False)
import matplotlib.pyplot as plt  # noqa: E402

plt.savefig(out / "umap.png", dpi=100, bbox_inches="tight")
print(f"{adata.n_obs} cells, {report['n_clusters']} clusters, ARI {report['ari']:.3f}; UMAP in {out / 'umap.png'}")

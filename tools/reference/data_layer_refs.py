"""Reference numbers for the aido-tokenize tests, computed once with anndata / h5py / scipy / numpy
(PyPI) from the files in ../shared/data. The tests pin these values; rerun to re-derive them:

    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install anndata h5py scipy numpy
    /tmp/refenv/bin/python tools/reference/data_layer_refs.py ../shared/data
"""
import json, sys, gzip
import numpy as np, anndata as ad, h5py, scipy.io, scipy.sparse as sp

d = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
vocab = [l.split("\t")[0] for l in open(f"{d}/OS_scRNA_gene_index.19264.tsv").read().splitlines()[1:]]
vset = set(vocab)
out = {}

def align_stats(names):
    seen, matched, dup, dropped = set(), 0, 0, 0
    for n in names:
        if n in seen: dup += 1; continue
        seen.add(n)
        if n in vset: matched += 1
        else: dropped += 1
    return dict(matched=matched, duplicated=dup, dropped=dropped)

def ref_tokens(X, names):
    """Aligned f32 preprocessing per SPEC-model §1 for rows of X (dense)."""
    pos = {}
    for j, n in enumerate(names):
        if n in vset and n not in pos: pos[n] = j
    A = np.zeros((X.shape[0], len(vocab)), np.float32)
    for n, j in pos.items(): A[:, vocab.index(n)] = X[:, j]
    tot = A.sum(1, keepdims=True, dtype=np.float32)
    v = np.log1p((A / tot) * np.float32(1e4)).astype(np.float32)
    dep = np.maximum(np.log10(tot), np.float32(5.0)).astype(np.float32)
    return np.concatenate([v, dep, dep], 1), tot[:, 0]

for f, col in [("zheng68k.h5ad", None), ("cellxgene.h5ad", None)]:
    a = ad.read_h5ad(f"{d}/{f}")
    X = a.X.toarray().astype(np.float32)
    names = list(a.var_names)
    tok, tot = ref_tokens(X, names)
    nz = np.nonzero(tok[3, :-2])[0][:3]
    out[f] = dict(n_obs=a.n_obs, n_vars=a.n_vars, nnz=int(a.X.nnz), total_sum=float(X.sum(dtype=np.float64)),
                  first_obs=a.obs_names[0], last_obs=a.obs_names[-1], first_var=names[0],
                  row_totals_0_3=[float(x) for x in X.sum(1)[:3]],
                  aligned_totals_0_3=[float(x) for x in tot[:3]],
                  cell3_first_nonzero_positions=[int(p) for p in nz],
                  cell3_values_at_those=[float(tok[3, p]) for p in nz],
                  depth_cell_max=float(tok[:, -1].max()),
                  obs_columns=list(a.obs.columns),
                  first_obs_labels={c: str(a.obs[c].iloc[0]) for c in a.obs.columns[:2]},
                  **align_stats(names))

h = h5py.File(f"{d}/10x_v3_filtered_feature_bc_matrix.h5")
m = h["matrix"]
M = sp.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=tuple(m["shape"][:]))  # genes x cells
names = [x.decode() for x in m["features/name"][:]]
tots = np.asarray(M.sum(0)).ravel()
out["10x_h5"] = dict(n_cells=M.shape[1], n_genes=M.shape[0], nnz=int(M.nnz), total_sum=float(tots.sum()),
                     first_barcode=m["barcodes"][0].decode(), cell_totals_0_3=[float(x) for x in tots[:3]],
                     **align_stats(names))
mm = scipy.io.mmread(f"{d}/10x_v3_filtered_feature_bc_matrix/matrix.mtx.gz").tocsc()
out["mtx_equals_h5"] = bool((abs(mm - M)).sum() == 0)
json.dump(out, sys.stdout, indent=1)

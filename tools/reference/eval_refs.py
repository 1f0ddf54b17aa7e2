"""Reference values for aido-eval's tests, computed once with scikit-learn, scib-metrics,
umap-learn and scanpy, and written (inputs and outputs) to aido-eval/tests/reference/eval_refs.json.

Run: python tools/reference/eval_refs.py   (a venv with scikit-learn 1.9.1, scib-metrics 0.5.10,
umap-learn 0.5.12, scanpy 1.11.5, anndata 0.12.19, scipy 1.14.1, jax; versions are recorded in
the output). The Rust tests only read the JSON: nothing of this runs in CI.
"""
import json, sys, importlib.metadata as md
import numpy as np
import scipy.sparse as sp
from sklearn import metrics as skm
from sklearn.neighbors import NearestNeighbors
from sklearn.decomposition import PCA

rng = np.random.default_rng(20261202)
out = {"versions": {p: md.version(p) for p in ["scikit-learn", "scib-metrics", "umap-learn", "scanpy", "numpy", "scipy"]}}

# ---- label agreement -------------------------------------------------------------------------
def agree(t, p):
    h, c, v = skm.homogeneity_completeness_v_measure(t, p)
    return dict(true=list(map(int, t)), pred=list(map(int, p)),
                ari=skm.adjusted_rand_score(t, p), nmi=skm.normalized_mutual_info_score(t, p),
                ami=skm.adjusted_mutual_info_score(t, p), homogeneity=h, completeness=c, v_measure=v,
                mi=skm.mutual_info_score(t, p))
cases = {}
t = rng.integers(0, 5, 300); p = rng.integers(0, 7, 300)
cases["random_5_vs_7"] = agree(t, p)
p2 = t.copy(); flip = rng.random(300) < 0.2; p2[flip] = rng.integers(0, 5, flip.sum())
cases["noisy_copy"] = agree(t, p2)
cases["permuted_identical"] = agree(t, (t + 3) % 5)
cases["single_vs_many"] = agree(np.zeros(50, int), rng.integers(0, 4, 50))
cases["both_single"] = agree(np.zeros(40, int), np.zeros(40, int))
cases["all_distinct_vs_two"] = agree(np.arange(30), np.arange(30) % 2)
cases["all_distinct_both"] = agree(np.arange(25), np.arange(25)[::-1])
cases["ties_small"] = agree(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 0, 1, 1, 1]))
big_t = rng.integers(0, 11, 5000); big_p = np.where(rng.random(5000) < 0.7, big_t, rng.integers(0, 14, 5000))
cases["n5000_11_vs_14"] = agree(big_t, big_p)
out["agreement"] = cases

# ---- classification --------------------------------------------------------------------------
names = np.array(["B", "CD4 T", "CD8 T", "NK", "Mono"])
yt = names[rng.integers(0, 4, 120)]           # "Mono" never true
yp = yt.copy(); f = rng.random(120) < 0.3; yp[f] = names[rng.integers(0, 5, f.sum())]  # "Mono" predicted
labels = sorted(set(yt) | set(yp))
out["classification"] = dict(
    true=yt.tolist(), pred=yp.tolist(), labels=labels,
    accuracy=skm.accuracy_score(yt, yp), macro_f1=skm.f1_score(yt, yp, average="macro"),
    per_class_f1=dict(zip(labels, skm.f1_score(yt, yp, average=None, labels=labels).tolist())),
    confusion=skm.confusion_matrix(yt, yp, labels=labels).tolist())

# ---- silhouette (sklearn) and scib metrics ----------------------------------------------------
X = np.concatenate([rng.normal(c, 1.0, (40, 6)) for c in (0.0, 2.0, 4.0)]).astype(np.float32)
lab = np.repeat(np.array(["a", "b", "c"]), 40)
lab_single = lab.copy(); lab_single[7] = "z"          # a singleton label
batch = np.array(["b1", "b2"])[rng.integers(0, 2, 120)]
batch[lab == "c"] = "b1"                               # label c has one batch: skipped by batch ASW
Xd = X.astype(np.float64)
sil = dict(x=X.ravel().tolist(), n=120, d=6, labels=lab.tolist(), labels_singleton=lab_single.tolist(),
           batch=batch.tolist(),
           samples_euclidean=skm.silhouette_samples(Xd, lab).tolist(),
           samples_cosine=skm.silhouette_samples(Xd, lab, metric="cosine").tolist(),
           score_euclidean=skm.silhouette_score(Xd, lab),
           score_cosine=skm.silhouette_score(Xd, lab, metric="cosine"),
           score_singleton=skm.silhouette_score(Xd, lab_single))
import scib_metrics as sm
from scib_metrics.nearest_neighbors import NeighborsResults
sil["scib_label_asw"] = float(sm.silhouette_label(X, lab))
sil["scib_batch_asw"] = float(sm.silhouette_batch(X, lab, batch))
def nn(k):
    d, i = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(Xd).kneighbors(Xd)
    return NeighborsResults(indices=i, distances=d.astype(np.float32))
sil["scib_graph_connectivity"] = float(sm.graph_connectivity(nn(15), lab))
nn90 = nn(90)
sil["scib_ilisi"] = float(sm.ilisi_knn(nn90, batch))
sil["scib_clisi"] = float(sm.clisi_knn(nn90, lab))
sil["scib_lisi_batch_cells"] = np.asarray(sm.lisi_knn(nn90, batch)).tolist()
out["embedding"] = sil

# ---- UMAP graph and curve ---------------------------------------------------------------------
import umap.umap_ as uu
a, b = uu.find_ab_params(1.0, 0.5)
d15, i15 = NearestNeighbors(n_neighbors=15, algorithm="brute").fit(Xd).kneighbors(Xd)
g, sig, rho = uu.fuzzy_simplicial_set(X, 15, 0, "euclidean", knn_indices=i15, knn_dists=d15.astype(np.float32))
g = g.tocsr(); g.sort_indices()
out["umap"] = dict(a=a, b=b, sigmas=sig.tolist(), rhos=rho.tolist(), indptr=g.indptr.tolist(),
                   indices=g.indices.tolist(), data=g.data.tolist(), knn_indices=i15.tolist())

# ---- PCA --------------------------------------------------------------------------------------
P = (rng.normal(0, 1, (200, 30)) @ rng.normal(0, 1, (30, 30))).astype(np.float32)
pca = PCA(n_components=10, svd_solver="arpack", random_state=0).fit(P)
out["pca"] = dict(x=P.ravel().tolist(), n=200, d=30, k=10, scores=pca.transform(P).ravel().tolist(),
                  components=pca.components_.ravel().tolist(), variance=pca.explained_variance_.tolist(),
                  variance_ratio=pca.explained_variance_ratio_.tolist())

# ---- scanpy HVG (seurat) on simulated counts ---------------------------------------------------
import anndata as ad, scanpy as sc
lam = np.exp(rng.normal(-1.0, 1.5, 300))
C = rng.poisson(lam[None, :] * rng.gamma(2.0, 0.5, (150, 300))).astype(np.float32)
C[:, 5] = 0  # an unexpressed gene
A = ad.AnnData(sp.csr_matrix(C))
sc.pp.normalize_total(A, target_sum=1e4); sc.pp.log1p(A)
sc.pp.highly_variable_genes(A)
hv = A.var
B = A.copy(); sc.pp.highly_variable_genes(B, n_top_genes=40)
S = A[:, A.var.highly_variable].copy(); sc.pp.scale(S)
S10 = A[:, A.var.highly_variable].copy(); sc.pp.scale(S10, max_value=1.0)
out["hvg"] = dict(counts=C.ravel().tolist(), n=150, g=300,
                  highly_variable=hv.highly_variable.tolist(), means=hv.means.tolist(),
                  dispersions=[None if np.isnan(v) else v for v in hv.dispersions],
                  dispersions_norm=[None if np.isnan(v) else v for v in hv.dispersions_norm],
                  top40=B.var.highly_variable.tolist(),
                  scaled_row0=np.asarray(S.X)[0].tolist(), scaled_clip_row0=np.asarray(S10.X)[0].tolist())

json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else "aido-eval/tests/reference/eval_refs.json", "w"))
print("written")

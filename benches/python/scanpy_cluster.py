"""The anchor of `aido cluster --expression`: scanpy's pipeline with the same settings
(normalize_total 1e4 → log1p → seurat HVG → scale → PCA 50 (arpack) → neighbors 15 → Leiden
(leidenalg, RB, n_iterations -1) with the same resolution search as aido (upper end 2, doubled
up to 10 while too few clusters, then bisection until the cluster count equals the number of
labels) → UMAP), timed end to end including reading the file. Prints one JSON line.

python benches/python/scanpy_cluster.py FILE.h5ad LABEL_COLUMN [OUT.h5ad]
Tested with scanpy 1.11.5, scipy 1.14.1, pynndescent 0.5.13, leidenalg 0.12.0, umap-learn 0.5.12.
"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.time()
import scanpy as sc
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
t_import = time.time() - t0

path, col = sys.argv[1], sys.argv[2]
t = {}
t1 = time.time()
A = sc.read_h5ad(path); t["read"] = time.time() - t1
s = time.time(); sc.pp.normalize_total(A, target_sum=1e4); sc.pp.log1p(A); sc.pp.highly_variable_genes(A)
A = A[:, A.var.highly_variable].copy(); sc.pp.scale(A); t["preprocess"] = time.time() - s
s = time.time(); sc.pp.pca(A, n_comps=50, svd_solver="arpack"); t["pca"] = time.time() - s
s = time.time(); sc.pp.neighbors(A, n_neighbors=15, random_state=0); t["neighbors"] = time.time() - s
target = A.obs[col].nunique()
s = time.time()
def run(r):
    sc.tl.leiden(A, resolution=r, random_state=0, key_added="leiden", flavor="leidenalg")
    return A.obs["leiden"].nunique()
tried = []; best = None
lo, hi, steps = 0.0, 2.0, 0
while True:
    k = run(hi); steps += 1; tried.append((hi, k))
    if best is None or abs(k - target) < abs(best[1] - target): best = (hi, k)
    if k >= target or hi >= 10 or steps >= 40: break
    lo, hi = hi, min(hi * 2, 10.0)
while best[1] != target and steps < 40 and hi - lo > 1e-6:
    mid = 0.5 * (lo + hi); k = run(mid); steps += 1; tried.append((mid, k))
    if abs(k - target) < abs(best[1] - target) or (abs(k - target) == abs(best[1] - target) and mid < best[0]): best = (mid, k)
    if k < target: lo = mid
    else: hi = mid
if run(best[0]) != best[1]: pass
t["leiden"] = time.time() - s
s = time.time(); sc.tl.umap(A, random_state=0); t["umap"] = time.time() - s
ari = adjusted_rand_score(A.obs[col], A.obs["leiden"]); nmi = normalized_mutual_info_score(A.obs[col], A.obs["leiden"])
if len(sys.argv) > 3: A.write_h5ad(sys.argv[3])
print(json.dumps(dict(tool="scanpy " + sc.__version__, n_cells=A.n_obs, n_hvg=int(A.n_vars), n_clusters=int(best[1]),
    resolution=best[0], ari=ari, nmi=nmi, seconds_total=time.time() - t0, seconds_import=t_import, stages=t,
    peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, tried=tried)))

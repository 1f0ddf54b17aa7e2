"""The anchor of `aido evaluate`: the same metrics with scikit-learn and scib-metrics on the same
file (obsm X_pca, obs label / cluster / batch columns), timed including reading the file.
Metrics: ARI, NMI, AMI, homogeneity, completeness (sklearn); silhouette euclidean and cosine
(sklearn); batch ASW, graph connectivity (15-NN), iLISI (90-NN, pynndescent as scib's
Benchmarker) (scib-metrics). Prints one JSON line.

python benches/python/metrics_anchor.py FILE.h5ad LABEL CLUSTER BATCH
"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.time()
import anndata as ad, numpy as np
from sklearn import metrics as skm
import scib_metrics as sm
from scib_metrics.nearest_neighbors import pynndescent
path, lab, clu, bat = sys.argv[1:5]
A = ad.read_h5ad(path)
X = np.asarray(A.obsm["X_pca"]); y = A.obs[lab].values; c = A.obs[clu].values; b = A.obs[bat].values
out = {}
s = time.time()
out["ari"] = skm.adjusted_rand_score(y, c); out["nmi"] = skm.normalized_mutual_info_score(y, c)
out["ami"] = skm.adjusted_mutual_info_score(y, c)
out["homogeneity"], out["completeness"], _ = skm.homogeneity_completeness_v_measure(y, c)
out["t_label_metrics"] = time.time() - s; s = time.time()
out["silhouette"] = float(skm.silhouette_score(X, y)); out["t_silhouette"] = time.time() - s; s = time.time()
out["silhouette_cosine"] = float(skm.silhouette_score(X, y, metric="cosine")); out["t_silhouette_cosine"] = time.time() - s; s = time.time()
out["batch_asw"] = float(sm.silhouette_batch(X, y, b)); out["t_batch_asw"] = time.time() - s; s = time.time()
nn = pynndescent(X, n_neighbors=90, random_state=0)
out["t_neighbors90"] = time.time() - s; s = time.time()
out["graph_connectivity"] = float(sm.graph_connectivity(nn.subset_neighbors(15), y))
out["ilisi"] = float(sm.ilisi_knn(nn, b)); out["t_graph_metrics"] = time.time() - s
out["seconds_total"] = time.time() - t0
out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
print(json.dumps(out))

"""Reference values for aido's linear perturbation baseline (Ahlmann-Eltze, Huber & Anders,
Nature Methods 2025, `solve_y_axb`), written out in numpy from the paper's formula:

    Y   genes x T training pseudobulk (mean log-expression per training perturbation)
    b   row means of Y;  Y_c = Y - b
    G   genes x K: PCA scores of Y_c with the genes as observations (columns centred)
    P   K x T: column t = sum over t's genes of that gene's row of G
    W   = (G'G + lambda I)^-1 G' Y_c P' (P P' + lambda I)^-1     (numpy.linalg.solve)
    yhat(p) = G W p + b

Writes reference.json: the inputs (gene names, training conditions and their mean profiles,
K, lambda), G, P, W and predictions for held-out conditions (a single never trained on and two
doubles). Predictions do not depend on the PCA components' signs. Generated data; CC0.

usage: python make_reference.py   (numpy only; run with numpy 2.x)
"""

import json
import pathlib

import numpy as np

rng = np.random.default_rng(7)
n_genes, K, lam = 40, 10, 0.1
genes = [f"g{i}" for i in range(n_genes)]
# 14 training singles and 6 training doubles over genes g0..g15; profiles with structure
base = rng.gamma(2.0, 0.5, n_genes)
effect = {g: rng.normal(0, 0.6, n_genes) * (rng.random(n_genes) < 0.3) for g in genes[:16]}
singles = [f"{g}+ctrl" for g in genes[:14]]
doubles = ["g0+g1", "g2+g3", "g4+g5", "g6+g7", "g1+g8", "g9+g10"]
train = singles + doubles


def profile(cond):
    gs = [g for g in cond.split("+") if g != "ctrl"]
    return base + sum(effect[g] for g in gs) + rng.normal(0, 0.05, n_genes)


Y = np.stack([profile(c) for c in train], axis=1)  # genes x T
b = Y.mean(axis=1)
Yc = Y - b[:, None]
Xc = Yc - Yc.mean(axis=0)  # PCA: genes are observations, columns centred
cov = Xc.T @ Xc / (n_genes - 1)
vals, vecs = np.linalg.eigh(cov)
order = np.argsort(vals)[::-1][:K]
comps = vecs[:, order]
for k in range(K):  # scikit-learn's sign rule
    if comps[np.argmax(np.abs(comps[:, k])), k] < 0:
        comps[:, k] *= -1
G = Xc @ comps  # genes x K
row = {g: G[i] for i, g in enumerate(genes)}


def pcol(cond):
    return sum(row[g] for g in cond.split("+") if g != "ctrl")


P = np.stack([pcol(c) for c in train], axis=1)  # K x T
A = G.T @ G + lam * np.eye(K)
B = P @ P.T + lam * np.eye(K)
W = np.linalg.solve(A, G.T @ Yc @ P.T) @ np.linalg.inv(B)
W2 = np.linalg.solve(B.T, np.linalg.solve(A, G.T @ Yc @ P.T).T).T
assert np.allclose(W, W2, rtol=1e-12)
held_out = ["g14+ctrl", "g15+ctrl", "g0+g14", "g3+g5"]
pred = {c: (G @ W @ pcol(c) + b).tolist() for c in held_out}

out = {
    "source": "testdata/perturb_linear/make_reference.py (numpy " + np.__version__ + "), seed 7",
    "formula": "W = (G'G + lambda I)^-1 G' Y_c P' (PP' + lambda I)^-1; yhat = G W p + b (Ahlmann-Eltze et al. 2025)",
    "genes": genes,
    "k": K,
    "ridge": lam,
    "train": {c: Y[:, i].tolist() for i, c in enumerate(train)},
    "G": G.tolist(),
    "P": P.tolist(),
    "Yc": Yc.tolist(),
    "W": W.tolist(),
    "predictions": pred,
}
pathlib.Path(__file__).with_name("reference.json").write_text(json.dumps(out, indent=1) + "\n")
print("wrote reference.json:", len(train), "training conditions,", len(held_out), "predictions")

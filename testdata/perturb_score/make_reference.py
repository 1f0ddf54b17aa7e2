#!/usr/bin/env python
"""Build a tiny real/pred perturbation pair and record cell-eval's own numbers.

Usage (from this folder, with a Python that has cell-eval 0.8.2 / pdex 0.3.0):

    /tmp/celleval/bin/python make_reference.py

Writes, next to this script:
    real.h5ad           ground truth (log1p of small integer counts, float32 CSR)
    pred.h5ad           prediction, same genes in the same order
    pred_permuted.h5ad  the same prediction with the gene columns permuted
                        (cell-eval rejects it; the error is recorded)
    reference.json      every number cell-eval reports, plus Systema metrics

Set KEEP_WORKDIR=1 to keep cell-eval's own output folders (results.csv,
agg_results.csv, real_de.csv, pred_de.csv, baseline.h5ad, ...).

cell-eval is invoked through its command-line interface, exactly as a user
would, in a temporary working directory. Nothing from cell-eval is copied
here; this script only calls the installed package.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import anndata as ad
import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp

SEED = 20250611
HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
CELL_EVAL = os.path.join(BIN, "cell-eval")

N_GENES = 16
GENES = [f"G{i}" for i in range(N_GENES)]
CONTROL = "non-targeting"
PERT_COL = "target_gene"
# four targets in the panel (note lexicographic order G1 < G12 < G2 < G3)
# and one whose target is not a gene of the panel
PERTS = ["G1", "G12", "G2", "G3", "ZNF_OFF"]
CONST_GENE = "G14"  # log1p(2) in every cell of both files
ZERO_GENE = "G15"  # 0 in every cell of both files


def gene_idx(name: str) -> int:
    return GENES.index(name)


# multiplicative effects on the Poisson rate, per perturbation
REAL_EFFECTS = {
    "G1": {"G1": 0.0, "G5": 4.0, "G6": 0.2},  # full knockout -> target mean 0 -> lfc -inf
    "G12": {"G12": 0.2, "G5": 2.5, "G11": 3.0},
    "G2": {"G2": 0.2, "G7": 3.0, "G8": 3.0},
    "G3": {"G3": 0.3, "G9": 0.25, "G10": 2.5},
    "ZNF_OFF": {},  # null perturbation
}
PRED_EFFECTS = {
    "G1": {"G1": 0.05, "G5": 4.0, "G6": 0.2},  # predicted well
    "G12": {"G12": 0.2, "G5": 2.5, "G11": 3.0, "G0": 2.0},  # right + one false gene
    "G2": {"G2": 0.5, "G7": 1.8, "G8": 1.8},  # right direction, half size
    "G3": {"G12": 0.2, "G5": 2.5, "G11": 3.0},  # looks like G12 (wrong)
    "ZNF_OFF": {"G13": 2.5},  # false positive effect
}
N_REAL = {CONTROL: 30, "G1": 14, "G12": 16, "G2": 12, "G3": 18, "ZNF_OFF": 15}
N_PRED = {CONTROL: 32, "G1": 15, "G12": 15, "G2": 15, "G3": 15, "ZNF_OFF": 15}


def simulate(rng, base, effects, n_cells, ctrl_scale):
    rows, labels = [], []
    for label, n in n_cells.items():
        rate = base.copy() * ctrl_scale
        if label != CONTROL:
            for g, f in effects[label].items():
                rate[gene_idx(g)] *= f
        counts = rng.poisson(rate, size=(n, N_GENES)).astype(np.float64)
        counts[:, gene_idx(CONST_GENE)] = 2.0
        counts[:, gene_idx(ZERO_GENE)] = 0.0
        rows.append(counts)
        labels += [label] * n
    counts = np.vstack(rows)
    labels = np.array(labels, dtype=object)
    order = rng.permutation(counts.shape[0])  # interleave the groups
    return counts[order], labels[order]


def to_adata(counts, labels, prefix, genes=GENES):
    x = sp.csr_matrix(np.log1p(counts).astype(np.float32))
    x.eliminate_zeros()
    obs = pd.DataFrame(
        {PERT_COL: pd.Categorical(labels)},
        index=[f"{prefix}{i}" for i in range(len(labels))],
    )
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=list(genes)))


def fnum(v):
    """JSON-safe float: non-finite values become the strings NaN / inf / -inf."""
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def frame_to_records(df: pl.DataFrame):
    out = []
    for row in df.iter_rows(named=True):
        rec = {}
        for k, v in row.items():
            rec[k] = fnum(v) if isinstance(v, (float, int)) and not isinstance(v, bool) else v
        out.append(rec)
    return out


def run(cmd, cwd):
    print("+", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout, p.stderr, sep="\n")
    return p


def per_pert_table(path):
    df = pl.read_csv(path)
    res = {}
    for row in df.iter_rows(named=True):
        pert = row.pop("perturbation")
        res[pert] = {k: fnum(v) for k, v in row.items()}
    return df.columns[1:], res


def agg_table(path):
    df = pl.read_csv(path)
    res = {}
    for row in df.iter_rows(named=True):
        stat = row.pop("statistic")
        res[stat] = {k: fnum(v) for k, v in row.items()}
    return res


def score_table(path):
    df = pl.read_csv(path)
    return {m: fnum(v) for m, v in df.iter_rows()}


def de_table(path):
    df = pl.read_csv(path, schema_overrides={"target": pl.Utf8, "feature": pl.Utf8})
    return frame_to_records(df)


def systema(real: ad.AnnData, pred: ad.AnnData):
    """Systema (Vinas Torne et al. 2025) centroid metrics, plain numpy, float64."""

    def centroids(a):
        x = a.X.toarray().astype(np.float64)
        lab = a.obs[PERT_COL].astype(str).to_numpy()
        return np.vstack([x[lab == p].mean(axis=0) for p in PERTS])

    t = centroids(real)
    p = centroids(pred)
    ref = t.mean(axis=0)  # mean of the TRUE perturbed centroids (no control)
    pdc = {}
    for i, name in enumerate(PERTS):
        a, b = t[i] - ref, p[i] - ref
        pdc[name] = float(np.corrcoef(a, b)[0, 1])
    d = np.sqrt(((p[:, None, :] - t[None, :, :]) ** 2).sum(axis=2))  # d[pred i, true j]
    closer = {}
    for i, name in enumerate(PERTS):
        others = np.delete(d[i], i)
        closer[name] = bool(d[i, i] < others.min())
    acc = float(np.mean(list(closer.values())))
    return {
        "pearson_delta_centroid": pdc,
        "pearson_delta_centroid_mean": float(np.mean(list(pdc.values()))),
        "centroid_accuracy": acc,
        "centroid_closest_is_own": closer,
        "centroid_distance_pred_row_true_col": {
            "order": PERTS,
            "matrix": d.tolist(),
        },
        "reference_centroid": ref.tolist(),
    }


def main():
    rng = np.random.default_rng(SEED)
    base = rng.uniform(0.4, 4.0, size=N_GENES)
    base[gene_idx(ZERO_GENE)] = 0.0
    real_counts, real_lab = simulate(rng, base, REAL_EFFECTS, N_REAL, 1.0)
    pred_counts, pred_lab = simulate(rng, base, PRED_EFFECTS, N_PRED, 1.1)

    real = to_adata(real_counts, real_lab, "r")
    pred = to_adata(pred_counts, pred_lab, "p")
    perm = rng.permutation(N_GENES)
    pred_perm = to_adata(pred_counts[:, perm], pred_lab, "p", genes=[GENES[i] for i in perm])

    real.write_h5ad(os.path.join(HERE, "real.h5ad"))
    pred.write_h5ad(os.path.join(HERE, "pred.h5ad"))
    pred_perm.write_h5ad(os.path.join(HERE, "pred_permuted.h5ad"))

    work = tempfile.mkdtemp(prefix="celleval_ref_")
    for f in ("real.h5ad", "pred.h5ad", "pred_permuted.h5ad"):
        shutil.copy(os.path.join(HERE, f), work)

    T = ["--num-threads", "1"]
    cmds = {
        "run_full": [CELL_EVAL, "run", "-ap", "pred.h5ad", "-ar", "real.h5ad",
                     "-o", "out_full", "--profile", "full"] + T,
        "run_vcc": [CELL_EVAL, "run", "-ap", "pred.h5ad", "-ar", "real.h5ad",
                    "-o", "out_vcc", "--profile", "vcc"] + T,
        "baseline": [CELL_EVAL, "baseline", "-a", "real.h5ad", "-o", "baseline.h5ad",
                     "-O", "baseline_de.csv", "-t", "1"],
        "run_base_full": [CELL_EVAL, "run", "-ap", "baseline.h5ad", "-ar", "real.h5ad",
                          "-dp", "baseline_de.csv", "-dr", "out_full/real_de.csv",
                          "-o", "base_full", "--profile", "full"] + T,
        "run_base_vcc": [CELL_EVAL, "run", "-ap", "baseline.h5ad", "-ar", "real.h5ad",
                         "-dp", "baseline_de.csv", "-dr", "out_full/real_de.csv",
                         "-o", "base_vcc", "--profile", "vcc"] + T,
        "score_full": [CELL_EVAL, "score", "-i", "out_full/agg_results.csv",
                       "-I", "base_full/agg_results.csv", "-o", "score_full.csv"],
        "score_vcc": [CELL_EVAL, "score", "-i", "out_vcc/agg_results.csv",
                      "-I", "base_vcc/agg_results.csv", "-o", "score_vcc.csv"],
        "run_permuted": [CELL_EVAL, "run", "-ap", "pred_permuted.h5ad", "-ar", "real.h5ad",
                         "-o", "out_perm", "--profile", "full"] + T,
    }
    procs = {k: run(c, work) for k, c in cmds.items()}
    for k, p in procs.items():
        if k != "run_permuted" and p.returncode != 0:
            raise SystemExit(f"{k} failed")

    ref = {}
    cols, ref["per_perturbation_full"] = per_pert_table(os.path.join(work, "out_full/results.csv"))
    ref["metric_columns_full"] = cols
    ref["agg_full"] = agg_table(os.path.join(work, "out_full/agg_results.csv"))
    cols, ref["per_perturbation_vcc"] = per_pert_table(os.path.join(work, "out_vcc/results.csv"))
    ref["metric_columns_vcc"] = cols
    ref["agg_vcc"] = agg_table(os.path.join(work, "out_vcc/agg_results.csv"))
    _, ref["baseline_per_perturbation_full"] = per_pert_table(os.path.join(work, "base_full/results.csv"))
    ref["baseline_agg_full"] = agg_table(os.path.join(work, "base_full/agg_results.csv"))
    _, ref["baseline_per_perturbation_vcc"] = per_pert_table(os.path.join(work, "base_vcc/results.csv"))
    ref["baseline_agg_vcc"] = agg_table(os.path.join(work, "base_vcc/agg_results.csv"))
    ref["score_full"] = score_table(os.path.join(work, "score_full.csv"))
    ref["score_vcc"] = score_table(os.path.join(work, "score_vcc.csv"))
    ref["de_real"] = de_table(os.path.join(work, "out_full/real_de.csv"))
    ref["de_pred"] = de_table(os.path.join(work, "out_full/pred_de.csv"))
    ref["de_baseline"] = de_table(os.path.join(work, "baseline_de.csv"))

    # the baseline prediction built by `cell-eval baseline`: one constant row per
    # perturbation (all cells identical) + the real control cells
    base = ad.read_h5ad(os.path.join(work, "baseline.h5ad"))
    bx = base.X.toarray() if sp.issparse(base.X) else np.asarray(base.X)
    blab = base.obs[PERT_COL].astype(str).to_numpy()
    ref["baseline_adata"] = {
        "X_dtype": str(bx.dtype),
        "X_is_sparse": bool(sp.issparse(base.X)),
        "n_cells": {k: int(v) for k, v in zip(*np.unique(blab, return_counts=True))},
        "perturbed_row": [float(v) for v in bx[blab != CONTROL][0]],
    }

    # cell-eval's own pseudobulk (group means of X), via its installed class
    from cell_eval import PerturbationAnndataPair

    pair = PerturbationAnndataPair(real=ad.read_h5ad(os.path.join(HERE, "real.h5ad")),
                                   pred=ad.read_h5ad(os.path.join(HERE, "pred.h5ad")),
                                   control_pert=CONTROL, pert_col=PERT_COL)
    pair._initialize_bulk_arrays()
    kr, vr = pair.bulk_real["_default"]
    kp, vp = pair.bulk_pred["_default"]
    ref["pseudobulk"] = {
        "dtype": str(vr.dtype),
        "real": {str(k): [float(x) for x in v] for k, v in zip(kr, vr)},
        "pred": {str(k): [float(x) for x in v] for k, v in zip(kp, vp)},
    }

    ref["systema"] = systema(real, pred)

    perm_p = procs["run_permuted"]
    tail = [ln for ln in (perm_p.stderr or "").splitlines() if ln.startswith("ValueError")]
    ref["permuted_gene_order"] = {
        "file": "pred_permuted.h5ad",
        "gene_order": [GENES[i] for i in perm],
        "cell_eval_exit_code": perm_p.returncode,
        "cell_eval_error": tail[-1] if tail else "",
    }

    versions = {p: md.version(p) for p in
                ("cell-eval", "pdex", "numba-mwu", "anndata", "numpy", "scipy",
                 "polars", "scikit-learn", "scanpy", "numba")}
    versions["python"] = sys.version.split()[0]
    settings = {
        "seed": SEED,
        "generator": "numpy.random.default_rng(seed); Poisson counts; X = float32(log1p(counts)), CSR",
        "genes": GENES,
        "perturbations": PERTS,
        "control": CONTROL,
        "pert_col": PERT_COL,
        "constant_genes": {CONST_GENE: "log1p(2) in every cell", ZERO_GENE: "0 in every cell"},
        "target_not_in_panel": "ZNF_OFF",
        "n_cells_real": N_REAL,
        "n_cells_pred": N_PRED,
        "pred_control_rate_scale": 1.1,
        "real_effects": REAL_EFFECTS,
        "pred_effects": PRED_EFFECTS,
        "pred_gene_order": "pred.h5ad has the same gene order as real.h5ad (cell-eval requires it); "
                           "pred_permuted.h5ad has permuted columns and is rejected by cell-eval",
        "versions": versions,
        "commands": {k: " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(c))
                     for k, c in cmds.items()},
        "command_cwd": "a temporary directory holding copies of real.h5ad, pred.h5ad, pred_permuted.h5ad",
        "float32_note": "cell-eval computes pseudobulks, pearson_delta, mse, mae, *_delta in float32 "
                        "(values here are float32 numbers widened to float64); DE target_mean/ref_mean are "
                        "float32 printed in shortest form (parse, then cast to f32); log2_fold_change, p_value, "
                        "fdr are float64 in the DE tables but cell-eval casts them to float32 before the DE metrics",
        "nondeterminism": "the baseline row (mean of group means, float32) is summed in polars group_by order, "
                          "which is random: it can differ by 1 ulp between runs of `cell-eval baseline`; "
                          "baseline numbers move in the ~7th digit, except the baseline's pearson_edistance "
                          "(and hence score_full.pearson_edistance and avg_score), which is a Pearson "
                          "correlation of rounding noise (every baseline perturbation has the same cells) "
                          "and changes arbitrarily between runs",
        "nonfinite_encoding": "NaN / inf / -inf are written as the JSON strings \"NaN\", \"inf\", \"-inf\"; "
                              "null means the cell was empty (metric not reported for that perturbation)",
        "systema_definitions": {
            "pearson_delta_centroid": "per perturbation p: Pearson(true_centroid_p - ref, pred_centroid_p - ref), "
                                      "ref = mean over perturbations (control excluded) of the TRUE centroids; "
                                      "centroid = mean over cells of X (log1p values), all genes, float64",
            "centroid_accuracy": "fraction of perturbations p with ||pred_p - true_p|| < min_{q != p} ||pred_p - true_q|| "
                                 "(Euclidean, strict)",
        },
    }
    out = {"settings": settings, **ref}
    with open(os.path.join(HERE, "reference.json"), "w") as fh:
        json.dump(out, fh, indent=1, allow_nan=False)
    print("wrote", os.path.join(HERE, "reference.json"))
    if os.environ.get("KEEP_WORKDIR"):
        print("cell-eval outputs kept in", work)
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

"""AIDO.Cell on AnnData objects: embeddings, annotation, clustering and perturbation.

The computation is the Rust SDK's (``aido-pipeline``): no torch, no CUDA. Every function takes
the ``AnnData`` you hold, reads raw counts from ``X`` or ``layers[layer]`` (scipy CSR or CSC,
matrix or array classes, dense numpy, any integer or float dtype, backed AnnData) one window of
cells at a time, and writes its results into the object the way scanpy does (``obsm``, ``obs``,
``obsp``, ``uns``), or into a copy with ``copy=True``. After an error or Ctrl-C the object is
unchanged. Progress bars use ``tqdm.auto`` when tqdm is installed (``progress=False``: silent).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import _core
from ._core import Model

__all__ = [
    "Model",
    "load_model",
    "embed",
    "finetune",
    "predict",
    "insilico",
    "cluster",
    "evaluate",
    "perturb_fit",
    "perturb_predict",
    "set_threads",
]
__version__ = _core.__version__

_WINDOW_NOTE = "cells are read one window at a time; the matrix is never densified whole"


def load_model(model: str | os.PathLike, *, genes: str | os.PathLike | None = None,
               device: str = "cpu", precision: str = "f32") -> Model:
    """Open an AIDO.Cell model.

    ``model`` is a checkpoint folder (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin`` [+ ``genes.tsv``]) or a Hugging Face id ``ORG/NAME[@REVISION]``
    (e.g. ``"genbio-ai/AIDO.Cell-3M"``), found in the huggingface_hub cache or downloaded into
    it (``HF_HUB_OFFLINE=1``: the cache only). ``genes``: the gene list (default: the folder's
    ``genes.tsv``, else the built-in 19,264-gene AIDO.Cell list). ``device``: ``cpu``
    (``cuda``/``wgpu`` in builds with those features); ``precision``: ``f32`` or ``bf16``.
    """
    return _core.load_model(os.fspath(model), None if genes is None else os.fspath(genes),
                            device, precision)


def _model(model: Model | str | os.PathLike) -> Model:
    return model if isinstance(model, Model) else load_model(model)


def _matrix(adata, layer: str | None):
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty: give the counts' layer (layer=...)")
        return adata.X, "adata.X"
    if layer not in adata.layers:
        raise KeyError(f"adata has no layer {layer!r} (layers: {', '.join(adata.layers) or 'none'})")
    return adata.layers[layer], f"adata.layers[{layer!r}]"


def _gene_names(adata, gene_column: str | None) -> tuple[list[str], str]:
    if gene_column is None:
        return [str(g) for g in adata.var_names], "var_names"
    if gene_column not in adata.var.columns:
        raise KeyError(f"adata.var has no column {gene_column!r} "
                       f"(columns: {', '.join(map(str, adata.var.columns)) or 'none'})")
    return [str(g) for g in adata.var[gene_column]], f"var[{gene_column!r}]"


def _column(adata, name: str) -> tuple[str, list[str | None]]:
    if name not in adata.obs.columns:
        raise KeyError(f"adata.obs has no column {name!r} "
                       f"(columns: {', '.join(map(str, adata.obs.columns)) or 'none'})")
    values = adata.obs[name]
    return name, [None if pd.isna(v) else str(v) for v in values]


def _window(m, start: int, stop: int):
    """Rows start..stop of any supported matrix as CSR (int64 indptr and indices, float32)."""
    w = m[start:stop]
    if sp.issparse(w):
        w = sp.csr_matrix(w)
    elif hasattr(w, "to_memory"):  # backed sparse datasets slice to scipy already; be safe
        w = sp.csr_matrix(w.to_memory())
    else:
        w = sp.csr_matrix(np.asarray(w))
    w.sum_duplicates()
    return (np.ascontiguousarray(w.indptr, dtype=np.int64),
            np.ascontiguousarray(w.indices, dtype=np.int64),
            np.ascontiguousarray(w.data, dtype=np.float32))


def _cells(adata, layer: str | None, gene_column: str | None, columns: list[str] = ()) -> dict:
    m, label = _matrix(adata, layer)
    genes, gene_from = _gene_names(adata, gene_column)
    if m.shape != (adata.n_obs, adata.n_vars):
        raise ValueError(f"{label} has shape {m.shape}, expected {(adata.n_obs, adata.n_vars)}")
    return {
        "reader": lambda start, stop: _window(m, start, stop),
        "n_cells": adata.n_obs,
        "genes": genes,
        "obs_names": [str(n) for n in adata.obs_names],
        "columns": [_column(adata, c) for c in columns if c is not None],
        "label": label,
        "gene_column": gene_from,
    }


def _progress(progress: bool, desc: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    if not progress:
        return None, lambda: None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None, lambda: None
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit="cell")
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return update, close


def embed(adata, model: Model | str, *, layer: str | None = None, gene_column: str | None = None,
          gene_id: str = "auto", pooling: str = "present-mean", batch_size: int = 8,
          key_added: str = "X_aido_cell", gene_embeddings: list[str] | None = None,
          allow_non_integer: bool = False, progress: bool = True, copy: bool = False):
    """Cell (and gene) embeddings of every cell, as ``aido embed``.

    Reads raw counts from ``adata.X`` (or ``adata.layers[layer]``), genes from ``var_names``
    (or ``var[gene_column]``), matched by ``gene_id`` (``auto``, ``symbol``, ``ensembl``,
    ``exact``). Normalized input is refused unless ``allow_non_integer``.

    Writes ``obsm[key_added]`` (float32 ``[n_obs, H]``), ``obsm["X_aido_gene_<G>"]`` for each
    gene of ``gene_embeddings``, and ``uns["aido_embed"]`` (model, precision, pooling,
    gene-alignment counts; ``uns[key_added]`` for a key other than ``"X_aido_cell"``).
    Returns None, or the new AnnData with ``copy=True``.
    """
    model = _model(model)
    cells = _cells(adata, layer, gene_column)
    update, close = _progress(progress, "embed")
    try:
        x, genes, kept, report = _core.embed(model, cells, pooling, batch_size, gene_embeddings,
                                             gene_id, allow_non_integer, update)
    finally:
        close()
    target = adata.copy() if copy else adata
    _warn_replaced(target, [("obsm", key_added)])
    target.obsm[key_added] = x
    for j, g in enumerate(gene_embeddings or []):
        target.obsm[f"X_aido_gene_{g}"] = np.ascontiguousarray(genes[:, j, :])
    # the run's record: uns["aido_embed"] for the default key, uns[key_added] for another
    # (as scanpy keeps a keyed result's parameters), so a second embedding keeps the first's
    target.uns["aido_embed" if key_added == "X_aido_cell" else key_added] = {
        "model": report["model"], "precision": report["precision"], "pooling": report["pooling"],
        "gene_vocabulary": report["gene_vocabulary"], "genes_matched": report["genes_matched"],
        "genes_in_input": report["genes_in_input"], "genes_in_model": report["genes_in_model"],
        "key_added": key_added,
    }
    return target if copy else None


def finetune(adata, model: Model | str, label_column: str, out_dir: str | os.PathLike, *,
             trainable: str = "last:1", pooling: str = "max", split_column: str | None = None,
             val_fraction: float = 0.1, test_fraction: float = 0.2, epochs: int = 20,
             batch_size: int = 16, lr: float = 1e-3, class_weights: str = "capped:50",
             patience: int = 5, seed: int = 0, baselines: bool = False,
             layer: str | None = None, gene_column: str | None = None,
             progress: bool = True) -> dict:
    """Fine-tune the encoder with the paper's head on ``obs[label_column]``, as
    ``aido finetune``: writes ``out_dir`` (report.json, confusion.png, classifier/,
    checkpoints/) and returns the report as a dict. ``out_dir/classifier`` is what
    :func:`predict` takes."""
    model = _model(model)
    cells = _cells(adata, layer, gene_column, [label_column, split_column])
    kw = dict(trainable=trainable, pooling=pooling, split_column=split_column,
              val_fraction=val_fraction, test_fraction=test_fraction, epochs=epochs,
              batch_size=batch_size, lr=lr, class_weights=class_weights, patience=patience,
              seed=seed, baselines=baselines)
    update, close = _progress(progress, "finetune")
    try:
        return _core.finetune(model, cells, label_column, os.fspath(out_dir), kw, "auto", False, update)
    finally:
        close()


def predict(adata, classifier: str | os.PathLike, *, batch_size: int = 8, layer: str | None = None,
            gene_column: str | None = None, key_added: str = "aido_cell_type",
            progress: bool = True, copy: bool = False):
    """Label cells with a classifier folder written by :func:`finetune` (``out_dir/classifier``).

    Writes ``obs[key_added]`` (categorical), ``obs[f"{key_added}_confidence"]``,
    ``obsm[f"{key_added}_proba"]`` ``[n_obs, C]``, ``uns[f"{key_added}_classes"]`` and
    ``uns[f"{key_added}_model"]`` (``key_added`` defaults to ``"aido_cell_type"``).
    """
    cells = _cells(adata, layer, gene_column)
    update, close = _progress(progress, "predict")
    try:
        proba, pred, conf, classes, kept, report = _core.predict(
            os.fspath(classifier), cells, batch_size, "cpu", "f32", "auto", False, update)
    finally:
        close()
    target = adata.copy() if copy else adata
    _warn_replaced(target, [("obs", key_added), ("obs", f"{key_added}_confidence"),
                            ("obsm", f"{key_added}_proba")])
    target.obs[key_added] = pd.Categorical.from_codes(np.asarray(pred, dtype=np.int64),
                                                      categories=classes)
    target.obs[f"{key_added}_confidence"] = np.asarray(conf, dtype=np.float64)
    target.obsm[f"{key_added}_proba"] = proba
    target.uns[f"{key_added}_classes"] = np.asarray(classes, dtype=object)
    target.uns[f"{key_added}_model"] = report["model"]
    return target if copy else None


def insilico(adata, model: Model | str, *, genes: list[str] | None = None, all_genes: bool = False,
             mode: str = "knockout", max_cells: int | None = None, batch_size: int = 8,
             layer: str | None = None, progress: bool = True):
    """In-silico knockout (``mode="knockout"``) or over-expression (``"overexpress:FOLD"``) of
    ``genes`` (or every measured gene with ``all_genes=True``), as ``aido insilico``.

    Returns a new AnnData: cells × perturbed genes, ``X`` = 1 − cos(cell embedding, perturbed
    embedding), ``var["mean_shift"]``, ``var["n_expressed"]``, ``var["mean_shift_expressed"]``.
    """
    import anndata as ad

    model = _model(model)
    cells = _cells(adata, layer, None)
    update, close = _progress(progress, "insilico")
    try:
        shifts, names, kept, mean, n_expr, mean_expr, report = _core.insilico(
            model, cells, genes, all_genes, mode, max_cells, batch_size, "auto", update)
    finally:
        close()
    out = ad.AnnData(X=shifts, obs=adata.obs.iloc[kept].copy(),
                     var=pd.DataFrame({"mean_shift": mean, "n_expressed": np.asarray(n_expr, dtype=np.int64),
                                       "mean_shift_expressed": mean_expr}, index=pd.Index(names)))
    out.uns["aido_insilico"] = report
    return out


def _warn_replaced(adata, entries) -> None:
    """Warns once naming the entries of ``adata`` (``(slot, key)`` pairs) a result replaces."""
    have = [f"{slot}[{key!r}]" for slot, key in entries
            if key in (adata.obs.columns if slot == "obs" else getattr(adata, slot))]
    if have:
        warnings.warn(f"replacing {', '.join(have)} (key_added= writes the results under another name)",
                      stacklevel=3)


def _csr(t) -> sp.csr_matrix:
    data, indices, indptr, shape = t
    if indptr[-1] <= np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def cluster(adata, *, use_rep: str | None = None, label_column: str | None = None,
            batch_column: str | None = None, n_clusters: int | None = None,
            resolution: float | None = None, n_pcs: int = 50, n_neighbors: int = 15, seed: int = 0,
            layer: str | None = None, copy: bool = False, use_rep_as_is: bool = False,
            key_added: str | None = None) -> dict:
    """Zero-shot clustering, as ``aido cluster``: PCA → kNN → Leiden → UMAP.

    ``use_rep=None``: the expression baseline on raw counts (``X`` or ``layers[layer]``:
    normalize 1e4, log1p, seurat HVG, scale, PCA); else an ``obsm`` key (e.g. ``"X_aido_cell"``),
    standardized and reduced to ``n_pcs`` components first (the papers' protocol), or, with
    ``use_rep_as_is=True``, used as it is like ``sc.pp.neighbors(use_rep=…)`` (no ``X_pca``).
    Writes ``obs["aido_leiden"]``, ``obsm["X_pca"]``, ``obsm["X_umap"]``,
    ``obsp["connectivities"]``, ``obsp["distances"]``, ``uns["neighbors"]``, ``uns["pca"]``,
    ``uns["aido_leiden_colors"]`` (and the HVG columns of ``var``, ``varm["PCs"]`` for the
    baseline) — ``sc.pl.umap`` works on it as is. With ``key_added=K``, as scanpy's
    ``key_added``: ``obs[K]``, ``uns[K]``, ``uns[f"{K}_colors"]``, ``uns[f"{K}_neighbors"]`` with
    ``obsp[f"{K}_neighbors_connectivities"]`` / ``obsp[f"{K}_neighbors_distances"]``,
    ``obsm``/``varm``/``uns[f"{K}_pca"]`` and ``obsm[f"{K}_umap"]``. Returns the report (ARI, NMI,
    … against ``label_column``; ``report["keys"]`` names where everything went).
    """
    columns = [_column(adata, c) for c in (label_column, batch_column) if c is not None]
    names = [str(n) for n in adata.obs_names]
    if use_rep is None:
        if use_rep_as_is:
            raise ValueError("use_rep_as_is applies to an obsm key (use_rep), not to the expression baseline")
        what = "X" if layer is None else f"layers/{layer}"
        r = _core.cluster_counts(_cells(adata, layer, None, [label_column, batch_column]), what,
                                 label_column, batch_column, n_clusters, resolution, n_pcs,
                                 n_neighbors, seed, key_added)
    else:
        if use_rep not in adata.obsm:
            raise KeyError(f"adata.obsm has no {use_rep!r} (keys: {', '.join(adata.obsm) or 'none'})")
        x = np.ascontiguousarray(adata.obsm[use_rep], dtype=np.float32)
        r = _core.cluster_embedding(use_rep, x, names, columns, adata.n_vars, label_column,
                                    batch_column, n_clusters, resolution, n_pcs, n_neighbors, seed,
                                    use_rep_as_is, key_added)
    target = adata.copy() if copy else adata
    _warn_replaced(target, [(slot, k) for slot in ("obs", "obsm", "obsp", "varm") for k in r[slot]])
    for k, (codes, cats) in r["obs"].items():
        target.obs[k] = pd.Categorical.from_codes(np.asarray(codes, dtype=np.int64), categories=cats)
    for k, m in r["obsm"].items():
        target.obsm[k] = m
    for k, t in r["obsp"].items():
        target.obsp[k] = _csr(t)
    for k, v in r["uns"].items():
        target.uns[k] = v
    for k, v in r["var"].items():
        target.var[k] = v
    for k, m in r["varm"].items():
        target.varm[k] = m
    report = r["report"]
    return (report, target) if copy else report


def evaluate(adata, label_column: str, *, cluster_column: str | None = None,
             prediction_column: str | None = None, embedding: str | None = None,
             batch_column: str | None = None) -> dict:
    """Metrics of columns already in ``adata``, as ``aido evaluate``: ARI/NMI/AMI of
    ``cluster_column``, accuracy/macro-F1/confusion of ``prediction_column``, silhouette and
    label ASW of the ``embedding`` (an obsm key), and the batch metrics with ``batch_column``."""
    cols = [c for c in (label_column, cluster_column, prediction_column, batch_column) if c]
    x = None
    if embedding is not None:
        if embedding not in adata.obsm:
            raise KeyError(f"adata.obsm has no {embedding!r} (keys: {', '.join(adata.obsm) or 'none'})")
        x = np.ascontiguousarray(adata.obsm[embedding], dtype=np.float32)
    return _core.evaluate_columns([str(n) for n in adata.obs_names], [_column(adata, c) for c in cols],
                                  label_column, cluster_column, prediction_column, embedding, x,
                                  batch_column)


def perturb_fit(adata, out_dir: str | os.PathLike, *, model: Model | str | None = None,
                condition_column: str = "condition", control_value: str = "ctrl",
                split: str = "simulation", seed: int = 1, epochs: int = 20, batch_size: int = 32,
                lr: float = 1e-3, hidden: int = 64, train_gene_fraction: float = 0.75,
                coexpress_all_cells: bool = False, pool: int = 300, min_cells: int = 3,
                gene_graph: str | os.PathLike | None = None, layer: str | None = None,
                gene_column: str | None = None) -> dict:
    """Fit GEARS on a perturbation screen (raw counts, ``obs[condition_column]``: ``A+ctrl``,
    ``A+B``, ``control_value``), next to the baselines, as ``aido perturb fit``; ``model``: an
    AIDO.Cell backbone (the paper's route), or None for GEARS's learned gene embeddings. Writes
    ``out_dir`` (predictions.json, report.json, model/) and returns the report."""
    m = None if model is None else _model(model)
    split_col = split if split in adata.obs.columns else None
    cells = _cells(adata, layer, gene_column, [condition_column, split_col])
    kw = dict(condition_column=condition_column, control_value=control_value, split=split,
              seed=seed, epochs=epochs, batch_size=batch_size, lr=lr, hidden=hidden,
              train_gene_fraction=train_gene_fraction, coexpress_all_cells=coexpress_all_cells,
              pool=pool, min_cells=min_cells,
              gene_graph=None if gene_graph is None else os.fspath(gene_graph))
    return _core.perturb_fit(cells, os.fspath(out_dir), kw, m)


def perturb_predict(model_dir: str | os.PathLike, conditions: list[str] | str) -> dict:
    """Predict the mean expression of ``conditions`` (``"A+B"``, ``"C+ctrl"``; also never-seen
    combinations) with ``out_dir/model`` of :func:`perturb_fit`; returns the CLI's JSON as a
    dict: ``{"genes": [...], "conditions": {name: {"split", "group", "predicted"}}}``."""
    if isinstance(conditions, str):
        conditions = [c for c in conditions.split(",") if c]
    return _core.perturb_predict_py(os.fspath(model_dir), list(conditions))


def set_threads(threads: int) -> None:
    """Caps the CPU threads aido uses for every computation in this process (attention,
    matmuls, clustering). Call it once, before the first computation; without it aido uses
    ``RAYON_NUM_THREADS`` if set, else one thread per logical CPU. Raises ``ValueError`` for 0,
    or when called again or after a computation has started the thread pool."""
    _core.set_threads(int(threads))

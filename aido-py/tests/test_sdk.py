"""aido_sdk on AnnData: the same numbers as the CLI, results in place, every input kind,
errors as Python exceptions with the AnnData untouched, Ctrl-C, the GIL released, scanpy's
plotting on the results."""

import os
import signal
import subprocess
import sys
import threading
import time

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import aido_sdk
from conftest import aido


def read(work, name="sim.h5ad"):
    return ad.read_h5ad(work / name)


def test_embed_equals_the_cli_bit_for_bit_and_writes_in_place(work, tmp_path):
    out = tmp_path / "cli.h5ad"
    aido("embed", "--model", work / "model", "--input", work / "sim.h5ad", "--output", out)
    cli = ad.read_h5ad(out).obsm["X_aido_cell"]
    a = read(work)
    before = set(a.obsm)
    assert aido_sdk.embed(a, str(work / "model"), progress=False) is None
    x = a.obsm["X_aido_cell"]
    assert x.dtype == np.float32 and x.shape == cli.shape
    assert np.array_equal(x, cli)
    assert set(a.obsm) == before | {"X_aido_cell"}
    u = a.uns["aido_embed"]
    assert u["pooling"] == "present-mean" and u["precision"] == "f32" and u["genes_matched"] == 150
    # copy=True leaves the original alone.
    b = read(work)
    c = aido_sdk.embed(b, aido_sdk.load_model(work / "model"), key_added="emb", copy=True, progress=False)
    assert "emb" in c.obsm and "emb" not in b.obsm
    assert np.array_equal(c.obsm["emb"], cli)
    assert c.uns["emb"]["key_added"] == "emb" and "aido_embed" not in c.uns
    # writing over an existing key warns, naming it
    with pytest.warns(UserWarning, match=r"replacing obsm\['emb'\]"):
        aido_sdk.embed(c, aido_sdk.load_model(work / "model"), key_added="emb", progress=False)


def as_kinds(a):
    """The same counts in every form users hold them."""
    x = sp.csr_matrix(a.X)
    dense = x.toarray()
    yield "csr_matrix", x
    yield "csc_matrix", sp.csc_matrix(x)
    yield "csr_array", sp.csr_array(x)
    yield "csc_array", sp.csc_array(x)
    yield "dense float64", dense.astype(np.float64)
    yield "dense int32", dense.astype(np.int32)
    yield "dense uint16", dense.astype(np.uint16)
    yield "csr int64", sp.csr_matrix(dense.astype(np.int64))


def test_every_input_kind_gives_the_same_embedding(work, tmp_path):
    model = aido_sdk.load_model(work / "model")
    ref = read(work)
    aido_sdk.embed(ref, model, progress=False)
    want = ref.obsm["X_aido_cell"]
    for name, x in as_kinds(read(work)):
        a = read(work)
        a.X = x
        aido_sdk.embed(a, model, progress=False)
        assert np.array_equal(a.obsm["X_aido_cell"], want), name
    # A layer, and genes from a var column.
    a = read(work)
    a.layers["counts"] = a.X.copy()
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    a.var["symbol"] = a.var_names.astype(str)
    a.var_names = [f"id{i}" for i in range(a.n_vars)]
    aido_sdk.embed(a, model, layer="counts", gene_column="symbol", progress=False)
    assert np.array_equal(a.obsm["X_aido_cell"], want)
    # Backed AnnData, read in windows.
    b = ad.read_h5ad(work / "sim.h5ad", backed="r")
    emb = aido_sdk.embed(b.to_memory(), model, progress=False, copy=True).obsm["X_aido_cell"]
    aido_sdk.embed(b, model, progress=False, key_added="backed")
    assert np.array_equal(b.obsm["backed"], want) and np.array_equal(emb, want)


def test_bad_input_raises_and_leaves_the_anndata_unchanged(work):
    model = aido_sdk.load_model(work / "model")
    a = read(work)
    snapshot = (a.X.copy(), dict(a.obsm), dict(a.uns), a.obs.copy())
    with pytest.raises(KeyError, match="no layer 'counts'"):
        aido_sdk.embed(a, model, layer="counts", progress=False)
    with pytest.raises(KeyError, match="no column 'nope'"):
        aido_sdk.embed(a, model, gene_column="nope", progress=False)
    norm = a.copy()
    norm.X = sp.csr_matrix(np.log1p(norm.X.toarray()))
    with pytest.raises(ValueError, match="allow_non_integer"):
        aido_sdk.embed(norm, model, progress=False)
    assert "X_aido_cell" not in norm.obsm
    with pytest.warns(UserWarning, match="non-integer"):
        aido_sdk.embed(norm, model, allow_non_integer=True, progress=False)
    with pytest.raises(FileNotFoundError):
        aido_sdk.load_model(work / "no_such_model")
    with pytest.raises(ValueError, match="pooling"):
        aido_sdk.embed(a, model, pooling="median", progress=False)
    with pytest.raises(KeyError, match="no column 'kind'"):
        aido_sdk.cluster(a, use_rep=None, label_column="kind")
    with pytest.raises(KeyError, match="X_nothing"):
        aido_sdk.cluster(a, use_rep="X_nothing")
    # An empty cell is refused naming it.
    e = a.copy()
    dense = e.X.toarray()
    dense[5, :] = 0
    e.X = sp.csr_matrix(dense)
    with pytest.raises(ValueError, match="no counts"):
        aido_sdk.embed(e, model, progress=False)
    assert np.array_equal(a.X.toarray(), snapshot[0].toarray())
    assert dict(a.obsm) == snapshot[1] and a.uns.keys() == snapshot[2].keys()
    assert a.obs.equals(snapshot[3])


def big(work, n=6000):
    a = read(work)
    reps = int(np.ceil(n / a.n_obs))
    x = sp.vstack([a.X] * reps).tocsr()[:n]
    b = ad.AnnData(X=x)
    b.var_names = a.var_names
    return b


def test_ctrl_c_interrupts_within_a_batch_and_changes_nothing(work):
    model = aido_sdk.load_model(work / "model")
    b = big(work)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        aido_sdk.embed(b, model, batch_size=1, progress=False)
    assert time.perf_counter() - t0 < 5.0
    assert "X_aido_cell" not in b.obsm


def test_the_gil_is_released_while_computing(work):
    model = aido_sdk.load_model(work / "model")
    b = big(work, 3000)
    ticks = 0
    stop = threading.Event()

    def spin():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    t0 = time.perf_counter()
    aido_sdk.embed(b, model, batch_size=32, progress=False)
    elapsed = time.perf_counter() - t0
    stop.set()
    t.join()
    # A thread that needs the GIL every millisecond kept running during the computation.
    assert ticks > 0.3 * elapsed * 1000, (ticks, elapsed)


def test_progress_goes_through_tqdm(work, monkeypatch):
    seen = []
    import tqdm.auto

    class Bar:
        def __init__(self, total, desc, unit):
            self.total, self.n = total, 0
            seen.append(("open", desc, total))

        def update(self, k):
            self.n += k

        def close(self):
            seen.append(("close", self.n))

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    aido_sdk.embed(read(work), aido_sdk.load_model(work / "model"))
    assert seen[0] == ("open", "embed", 240) and seen[-1] == ("close", 240)


def test_cluster_equals_the_cli_and_scanpy_plots_it(work, tmp_path):
    out = tmp_path / "cl.h5ad"
    aido("cluster", "--input", work / "sim.h5ad", "--output", out, "--expression",
         "--label-column", "cell_type")
    cli = ad.read_h5ad(out)
    a = read(work)
    report = aido_sdk.cluster(a, label_column="cell_type")
    assert np.array_equal(a.obsm["X_umap"], cli.obsm["X_umap"])
    assert np.array_equal(a.obsm["X_pca"], cli.obsm["X_pca"])
    assert (a.obs["aido_leiden"].astype(str) == cli.obs["aido_leiden"].astype(str)).all()
    for k in ("connectivities", "distances"):
        assert (a.obsp[k] != cli.obsp[k]).nnz == 0
        assert a.obsp[k].indptr.dtype == np.int32
    assert a.obsp["distances"].dtype == np.float64
    assert report["ari"] is not None and 0 <= report["ari"] <= 1
    sc.pl.umap(a, color="aido_leiden", show=False)
    sc.tl.paga(a, groups="aido_leiden")
    # An embedding.
    m = aido_sdk.load_model(work / "model")
    aido_sdk.embed(a, m, progress=False)
    r2 = aido_sdk.cluster(a, use_rep="X_aido_cell", label_column="cell_type", batch_column="batch")
    assert r2["batch_asw"] is not None
    ev = aido_sdk.evaluate(a, "cell_type", cluster_column="aido_leiden", embedding="X_aido_cell")
    assert abs(ev["ari"] - r2["ari"]) < 1e-12 and "silhouette" in ev
    # The embedding as it is: scanpy's neighbors(use_rep=...) graph, equal to the CLI's.
    b = read(work)
    b.obsm["X_aido_cell"] = a.obsm["X_aido_cell"]
    b.write_h5ad(tmp_path / "emb.h5ad")
    aido_sdk.cluster(b, use_rep="X_aido_cell", use_rep_as_is=True)
    assert "X_pca" not in b.obsm and b.uns["neighbors"]["params"]["use_rep"] == "X_aido_cell"
    aido("cluster", "--input", tmp_path / "emb.h5ad", "--output", tmp_path / "emb_cl.h5ad",
         "--embedding", "X_aido_cell", "--use-rep-as-is")
    cli_b = ad.read_h5ad(tmp_path / "emb_cl.h5ad")
    assert (b.obsp["connectivities"] != cli_b.obsp["connectivities"]).nnz == 0
    with pytest.raises(ValueError, match="use_rep_as_is"):
        aido_sdk.cluster(read(work), use_rep_as_is=True)
    # key_added: the same graph under scanpy's keyed names, beside the first; the CLI agrees.
    with pytest.warns(UserWarning, match=r"replacing obs\['aido_leiden'\]"):
        aido_sdk.cluster(b, use_rep="X_aido_cell", use_rep_as_is=True)
    rk = aido_sdk.cluster(b, use_rep="X_aido_cell", use_rep_as_is=True, key_added="k")
    assert rk["keys"]["connectivities"] == "k_neighbors_connectivities"
    assert (b.obsp["k_neighbors_connectivities"] != b.obsp["connectivities"]).nnz == 0
    assert b.uns["k_neighbors"]["connectivities_key"] == "k_neighbors_connectivities"
    assert list(b.obs["k"]) == list(b.obs["aido_leiden"]) and len(b.uns["k_colors"]) == b.obs["k"].nunique()
    sc.tl.leiden(b, flavor="igraph", n_iterations=2, neighbors_key="k_neighbors", key_added="lk")
    sc.pl.embedding(b, basis="k_umap", color="k", show=False)


def test_predict_equals_the_cli(work, tmp_path):
    out = tmp_path / "pred.h5ad"
    aido("predict", "--model", work / "run" / "classifier", "--input", work / "sim.h5ad", "--output", out)
    cli = ad.read_h5ad(out)
    a = read(work)
    aido_sdk.predict(a, work / "run" / "classifier", progress=False)
    assert np.array_equal(a.obsm["aido_cell_type_proba"], cli.obsm["aido_cell_type_proba"])
    assert (a.obs["aido_cell_type"].astype(str) == cli.obs["aido_cell_type"].astype(str)).all()
    assert a.obs["aido_cell_type"].dtype == "category"
    assert list(a.uns["aido_cell_type_classes"]) == list(cli.uns["aido_cell_type_classes"])
    with pytest.raises(FileNotFoundError):
        aido_sdk.predict(a, work / "nope")


def test_finetune_insilico_and_perturbation(work, tmp_path):
    a = read(work)
    r = aido_sdk.finetune(a, str(work / "model"), "cell_type", tmp_path / "ft", trainable="frozen",
                          epochs=2, progress=False)
    assert r["n_train"] + r["n_val"] + r["n_test"] == a.n_obs
    assert (tmp_path / "ft" / "classifier" / "classifier.json").is_file()
    with pytest.raises(KeyError, match="no column 'kind'"):
        aido_sdk.finetune(a, str(work / "model"), "kind", tmp_path / "ft2", progress=False)
    genes = list(a.var_names[:2])
    s = aido_sdk.insilico(a, str(work / "model"), genes=genes, max_cells=10, progress=False)
    assert s.shape == (10, 2) and list(s.var_names) == genes
    assert {"mean_shift", "n_expressed"} <= set(s.var.columns)
    screen = tmp_path / "screen.h5ad"
    aido("simulate", "--perturbations", 8, "--doubles", 6, "--control-cells", 80,
         "--cells-per-condition", 10, "--output", screen)
    p = ad.read_h5ad(screen)
    rep = aido_sdk.perturb_fit(p, tmp_path / "pert", epochs=2)
    assert "groups" in rep and (tmp_path / "pert" / "model").is_dir()
    pred = aido_sdk.perturb_predict(tmp_path / "pert" / "model", ["P0G00+P1G00", "P0G01+ctrl"])
    assert set(pred["conditions"]) == {"P0G00+P1G00", "P0G01+ctrl"}
    assert len(pred["conditions"]["P0G01+ctrl"]["predicted"]) == len(pred["genes"])


def test_set_threads_caps_once_and_refuses_bad_values():
    # 0 is refused here; the cap itself needs a fresh process (the pool starts once).
    with pytest.raises(ValueError, match="at least 1"):
        aido_sdk.set_threads(0)
    code = (
        "import aido_sdk\n"
        "aido_sdk.set_threads(1)\n"
        "try:\n"
        "    aido_sdk.set_threads(2)\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "refused:" in out.stdout and "before any computation" in out.stdout, out

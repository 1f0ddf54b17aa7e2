"""Shared fixtures: everything is made here with the `aido` binary (simulated counts, a tiny
model pretrained for a few updates, a classifier), so the suite needs nothing but the
repository. AIDO_BIN names the binary (default: target/release/aido of this repository)."""

import os
import pathlib
import subprocess

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = pathlib.Path(__file__).resolve().parents[2]
AIDO = os.environ.get("AIDO_BIN", str(ROOT / "target" / "release" / "aido"))


def aido(*args):
    """Runs the aido binary; fails the test with its stderr."""
    r = subprocess.run([AIDO, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"aido {' '.join(map(str, args))}: {r.stderr}"
    return r.stdout


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    """sim.h5ad (240 cells × 150 genes, 3 types, 2 batches), its panel, a tiny model pretrained
    on it, and a classifier fine-tuned from the model."""
    d = tmp_path_factory.mktemp("aido")
    aido("simulate", "--cells", 240, "--genes", 150, "--cell-types", 3, "--batches", 2,
         "--seed", 3, "--output", d / "sim.h5ad", "--panel-out", d / "genes.tsv")
    aido("pretrain", "--data", d / "sim.h5ad", "--genes", d / "genes.tsv", "--out", d / "model",
         "--preset", "tiny", "--steps", 3, "--batch-size", 8, "--val-every", 3,
         "--checkpoint-every", 3, "--quiet")
    aido("finetune", "--model", d / "model", "--input", d / "sim.h5ad", "--label-column",
         "cell_type", "--out", d / "run", "--trainable", "frozen", "--epochs", 2)
    return d

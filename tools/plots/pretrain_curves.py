"""Draws the validation/training RDA loss curves of `aido pretrain` runs next to their trivial
baselines (OUT/metrics.jsonl, OUT/baselines.json) into one PNG.

    python tools/plots/pretrain_curves.py OUT.png TITLE1=RUN_DIR1 [TITLE2=RUN_DIR2 ...]

Needs matplotlib. Reporting only: nothing in the Rust project depends on it.
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    runs = [a.split("=", 1) for a in sys.argv[2:]]
    fig, axes = plt.subplots(1, len(runs), figsize=(6.2 * len(runs), 4.4), squeeze=False)
    for ax, (title, d) in zip(axes[0], runs):
        d = Path(d)
        rows = [json.loads(l) for l in d.joinpath("metrics.jsonl").read_text().splitlines() if l.strip()]
        base = json.loads(d.joinpath("baselines.json").read_text())
        steps = [r["step"] for r in rows if r["step"] > 0]
        train = [r["train_loss"] for r in rows if r["step"] > 0]
        val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        ax.plot(steps, train, color="0.7", lw=0.8, label="train (per update)")
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", color="C0", ms=3, label="validation")
        for key, name, c in [("gene_mean", "gene mean", "C3"), ("cell_mean", "cell mean of visible inputs", "C2"), ("zero", "predict 0", "C4")]:
            ax.axhline(base[key], ls="--", color=c, lw=1, label=f"baseline: {name} ({base[key]:.3f})")
        ax.set_yscale("log")
        ax.set_xlabel("update")
        ax.set_ylabel("masked MSE (RDA)")
        ax.set_title(f"{title}: final validation {val[-1][1]:.3f}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

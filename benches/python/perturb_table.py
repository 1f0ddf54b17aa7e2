"""Summarises the report.json files of benches/perturb_baselines.sh as markdown tables.

usage: python perturb_table.py OUT SPLITS
"""

import json
import pathlib
import statistics
import sys

out, splits = pathlib.Path(sys.argv[1]), int(sys.argv[2])
metrics = ["mse_top20_de", "pearson_delta", "l2_top1000", "pearson_delta_centroid", "centroid_accuracy"]
methods = ["model", "no_change", "mean_delta", "additive", "matching_mean", "linear"]
for decay in ["0.5", "1.0"]:
    reports = [json.loads((out / f"decay{decay}_seed{s}" / "report.json").read_text()) for s in range(1, splits + 1)]
    groups = sorted({g for r in reports for g in r["groups"]})
    print(f"\n### --lr-decay {decay} (model = GEARS; the baselines do not depend on it), {splits} splits\n")
    for g in groups:
        n = [r["groups"][g]["model"]["n_conditions"] for r in reports if g in r["groups"]]
        print(f"**{g}** ({min(n)}–{max(n)} test conditions per split)\n")
        print("| method | " + " | ".join(metrics) + " |")
        print("|---|" + "---|" * len(metrics))
        for m in methods:
            cells = []
            for k in metrics:
                v = [r["groups"][g][m][k] for r in reports if g in r["groups"] and m in r["groups"][g]]
                if not v:
                    cells.append("–")
                elif len(v) == 1:
                    cells.append(f"{v[0]:.3f}")
                else:
                    cells.append(f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}")
            print(f"| {m} | " + " | ".join(cells) + " |")
        print()

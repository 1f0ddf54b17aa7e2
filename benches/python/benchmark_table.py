"""Markdown tables from `aido perturb benchmark` outputs (benchmark.json), one per test group.

    python3 benches/python/benchmark_table.py LEARNED/benchmark.json [ENCODER/benchmark.json]

The first file's `model` is GEARS with learned gene embeddings ("GEARS, learned"); the second
file's `model` is GEARS on the encoder's gene embeddings ("GEARS + encoder"), and its
`linear_encoder` is added. The baselines are taken from the first file (both runs use the same
splits). Cells: mean ± sd over the splits (the conditions per split are in each split_SEED/report.json).
"""
import json
import sys

METRICS = ["mse_top20_de", "pearson_delta", "l2_top1000", "pearson_delta_centroid",
           "centroid_accuracy", "overlap_at_N", "discrimination_score_l1", "mae"]
ORDER = ["model", "model+encoder", "linear", "linear_encoder", "additive", "matching_mean",
         "mean_delta", "no_change"]
NAMES = {"model": "GEARS, learned", "model+encoder": "GEARS + encoder"}

first = json.load(open(sys.argv[1]))
methods = dict(first["methods"])
if len(sys.argv) > 2:
    enc = json.load(open(sys.argv[2]))["methods"]
    methods["model+encoder"] = enc["model"]
    if "linear_encoder" in enc:
        methods["linear_encoder"] = enc["linear_encoder"]
groups = sorted({g for m in methods.values() for g in m})
print(f"splits: {[s.get('seed') for s in first['splits']]}")
for g in groups:
    print(f"\n**{g}**\n")
    print("| method | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for m in ORDER:
        per = methods.get(m, {}).get(g)
        if per is None:
            continue
        cells = []
        for k in METRICS:
            v = per.get(k)
            if v is None or v.get("mean") is None:
                cells.append("–")
            else:
                cells.append(f"{v['mean']:.3f} ± {v['sd']:.3f}")
        print(f"| {NAMES.get(m, m)} | " + " | ".join(cells) + " |")

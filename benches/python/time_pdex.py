"""Times pdex (the DE step of cell-eval 0.8) on one file, as cell-eval calls it.

usage: python time_pdex.py FILE.h5ad [THREADS]
"""

import sys
import time

import anndata as ad
from pdex import pdex

a = ad.read_h5ad(sys.argv[1])
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
t = time.perf_counter()
de = pdex(a, mode="ref", reference="non-targeting", groupby="target_gene", threads=threads,
          is_log1p=True, epsilon=0.0)
print(f"pdex: {time.perf_counter() - t:.2f} s ({len(de)} rows, {threads} threads)")

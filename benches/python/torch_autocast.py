"""Runs a PyTorch script (the anchor ../shared/anchors/torch_aido.py) unchanged under
`torch.autocast("cpu", dtype=torch.bfloat16)`: the one line a PyTorch user adds for bf16 on
the CPU (linear layers and SDPA in bf16, softmax/norms as autocast decides).

    python benches/python/torch_autocast.py SCRIPT.py [its arguments...]

The script prints what it prints (its JSON line); nothing of it is copied here.
"""
import runpy
import sys

import torch

script = sys.argv[1]
sys.argv = sys.argv[1:]
with torch.autocast("cpu", dtype=torch.bfloat16):
    runpy.run_path(script, run_name="__main__")

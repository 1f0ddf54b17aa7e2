"""Anchor for examples/gpu_check: ../shared/anchors/torch_aido.py on CUDA in bf16 mixed precision.

usage: torch_aido_cuda.py PATH/torch_aido.py MODEL_DIR CASES.safetensors [n_cells]
Runs the anchor unchanged, as GPU.md describes it: its tensors are loaded onto the GPU, the
forward runs under torch.autocast(bfloat16) (bf16 matmuls and SDPA, f32 norms: the mixed
precision of `aido --precision bf16`), and the clock it reads synchronizes the device first.
Prints the anchor's JSON line (s_per_cell includes the first call's warm-up).
"""
import runpy, sys, time
import torch
import safetensors.torch as st

if not torch.cuda.is_available():
    sys.exit("torch_aido_cuda: no CUDA device")
_load, _time = st.load_file, time.time
st.load_file = lambda path, device="cpu": {k: v.to("cuda") for k, v in _load(path).items()}
time.time = lambda: (torch.cuda.synchronize(), _time())[1]
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
with torch.autocast("cuda", dtype=torch.bfloat16):
    runpy.run_path(script, run_name="__main__")

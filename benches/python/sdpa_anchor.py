"""Anchor for examples/gpu_check: PyTorch's scaled_dot_product_attention on the same card.

usage: sdpa_anchor.py --shapes "B,H,S,D;B,H,S,D" [--iters 3]
Prints one JSON line per shape and dtype (float32, bfloat16): the median seconds of `iters`
timed calls after one warm-up, on CUDA (torch picks its flash / memory-efficient kernel).
"""
import json, sys, time
import torch, torch.nn.functional as F

argv = sys.argv[1:]
shapes = [tuple(int(x) for x in s.split(",")) for s in argv[argv.index("--shapes") + 1].split(";")]
iters = int(argv[argv.index("--iters") + 1]) if "--iters" in argv else 3
if not torch.cuda.is_available():
    sys.exit("sdpa_anchor: no CUDA device")
for shape in shapes:
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (torch.rand(shape, device="cuda", dtype=dtype) * 2 - 1 for _ in range(3))
        times = []
        for it in range(iters + 1):
            torch.cuda.synchronize()
            t = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v)
            torch.cuda.synchronize()
            if it:
                times.append(time.perf_counter() - t)
        times.sort()
        print(json.dumps({"shape": list(shape), "dtype": str(dtype).split(".")[1],
                          "seconds": times[len(times) // 2], "torch": torch.__version__}), flush=True)
        del q, k, v
        torch.cuda.empty_cache()

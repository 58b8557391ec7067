"""Standalone repro: oneDNN's AVX2 1x1 convolution backward-weights kernel corrupts the heap or hangs.

    python benchmarks/avx2_conv_backward.py                 # the failing case, 1 thread (exit 1 on failure)
    python benchmarks/avx2_conv_backward.py --threads 2     # the hang (exit 1 after --timeout seconds)
    python benchmarks/avx2_conv_backward.py --scan          # which shapes fail, one line each
    python benchmarks/avx2_conv_backward.py --no-mkldnn     # the same with torch.backends.mkldnn.enabled = False
    python benchmarks/avx2_conv_backward.py --format route  # through train.nchw_convolutions (what training does)

Needs torch only. Each case runs in a child process under a timeout (a hang or a glibc abort in
the child is reported, not suffered) with MALLOC_CHECK_=3 so a heap overrun aborts at once.
The child runs F.conv2d(x, w, stride=2) with x N x C_in x H x W in channels-last and w C_out x C_in
x 1 x 1, backpropagates into w (the weight gradient alone is enough), --reps times, and compares the
weight gradient with PyTorch's native kernel (mkldnn disabled) on the same inputs. --format route:
channels-last tensors into an nn.Conv2d made channels-last and then passed through
wae_deploy.training.train.nchw_convolutions, as train() does on AVX2-only CPUs (needs wae_deploy importable).

Found on an AVX2-only AMD EPYC (2 cores, no AVX-512) with torch 2.13.0+cpu (oneDNN v3.12.0):
kernel jit_1x1:avx2 backward_weights, C_in 3, 4 or 6 (not 8, 12, 16, 32), stride 2, channels-last,
batch >= 2: "double free or corruption (!prev)" / "free(): invalid next size" / SIGSEGV on 1 thread,
an endless loop inside the kernel on 2 threads. Exit status: 0 all cases passed, 1 a case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _host() -> dict:
    """The CPU the cases ran on: model and class (wae_deploy.runtime.machine, standard library only)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from wae_deploy.runtime import machine

    info = machine.parse_cpuinfo(machine.read(machine.LIVE, "proc/cpuinfo"))
    return {"cpu_model": info["model"], "cpu_class": machine.cpu_class(info["flags"])}


CHILD = r"""
import sys, json, torch, torch.nn.functional as F
n, cin, cout, hw, stride, reps, threads, mkldnn, fmt = json.loads(sys.argv[1])
torch.set_num_threads(threads)
torch.backends.mkldnn.enabled = mkldnn
torch.manual_seed(0)
mf = torch.contiguous_format if fmt == "nchw" else torch.channels_last
if fmt == "route":
    from wae_deploy.training.train import nchw_convolutions
    conv = torch.nn.Conv2d(cin, cout, 1, stride, bias=False).to(memory_format=mf)
    nchw_convolutions(conv)
worst = 0.0
for _ in range(reps):
    x = torch.randn(n, cin, hw, hw).contiguous(memory_format=mf)
    w = torch.randn(cout, cin, 1, 1).contiguous(memory_format=mf).requires_grad_(True)
    if fmt == "route":
        with torch.no_grad():
            conv.weight.copy_(w)
        w = conv.weight
        y = conv(x)
        assert y.is_contiguous(memory_format=torch.channels_last)
    else:
        y = F.conv2d(x, w, None, stride)
    g = torch.randn_like(y)
    (gw,) = torch.autograd.grad(y, w, g)
    with torch.backends.mkldnn.flags(enabled=False):
        w2 = w.detach().requires_grad_(True)
        (ref,) = torch.autograd.grad(F.conv2d(x, w2, None, stride), w2, g)
    worst = max(worst, ((gw - ref).abs().max() / ref.abs().max()).item())
print(json.dumps({"max_rel_err": worst}))
"""


def run_case(n, cin, cout, hw, stride, reps, threads, mkldnn, fmt, timeout) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MALLOC_CHECK_="3")
    args = json.dumps([n, cin, cout, hw, stride, reps, threads, mkldnn, fmt])
    case = {"n": n, "c_in": cin, "c_out": cout, "hw": hw, "stride": stride, "format": fmt, "threads": threads,
            "mkldnn": mkldnn}
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, args], env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**case, "result": "hang", "detail": f"no end after {timeout} s"}
    secs = round(time.perf_counter() - t0, 1)
    if p.returncode != 0:
        last = [line for line in p.stderr.splitlines() if line.strip() and "Warning" not in line]
        return {**case, "result": "crash", "detail": f"exit {p.returncode}: {last[-1] if last else ''}"[:120]}
    err = json.loads(p.stdout.strip().splitlines()[-1])["max_rel_err"]
    ok = err < 1e-4
    return {**case, "result": "ok" if ok else "wrong", "detail": f"max rel err {err:.1e}, {secs} s"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20, help="backward passes per case")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per case before it counts as a hang")
    ap.add_argument("--no-mkldnn", action="store_true", help="torch.backends.mkldnn.enabled = False")
    ap.add_argument("--format", choices=("cl", "nchw", "route"), default="cl",
                    help="route: channels-last through wae_deploy.training.train.nchw_convolutions")
    ap.add_argument("--scan", action="store_true", help="C_in, stride, batch and size around the failing case")
    ap.add_argument("--json", help="write the cases and results here")
    a = ap.parse_args()
    import torch
    print(f"torch {torch.__version__}, {torch.backends.mkldnn.is_available() and 'oneDNN available'}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}", flush=True)
    cases = [(32, 4, 8, 16, 2)]  # WAE-ResNet-20's I_H branch: first stride-2 shortcut, 4 -> 8 channels
    if a.scan:
        cases += [(32, cin, cout, 16, s) for cin, cout in ((3, 8), (4, 4), (4, 16), (6, 8), (8, 16), (12, 16),
                                                          (16, 32)) for s in (1, 2)]
        cases += [(32, 4, 8, 16, 1)] + [(n, 4, 8, 16, 2) for n in (1, 2, 128)] + [(32, 4, 8, hw, 2) for hw in (8, 32)]
    results = []
    for c in cases:
        r = run_case(*c, a.reps, a.threads, not a.no_mkldnn, a.format, a.timeout)
        results.append(r)
        print(f"N={r['n']:<4} C_in={r['c_in']:<3} C_out={r['c_out']:<3} {r['hw']}x{r['hw']} stride {r['stride']} "
              f"{r['format']} threads={r['threads']} mkldnn={'on' if r['mkldnn'] else 'off'}: "
              f"{r['result'].upper()} ({r['detail']})", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "torch": torch.__version__, "host": _host(), "results": results},
                      f, indent=2)
    failed = [r for r in results if r["result"] != "ok"]
    print(f"{len(failed)} of {len(results)} cases failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

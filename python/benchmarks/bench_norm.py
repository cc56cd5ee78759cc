"""ibnorm.Norm against the same normalizer written as eager PyTorch ops, in one process.

    PYTHONPATH=build/python python3 python/benchmarks/bench_norm.py [--spec ibnorm-t] [--shape 4096,1024]

For each device (the CPU, and CUDA when PyTorch sees one) it checks that both give the same
output, then times the forward pass and forward + backward (median of --repeats after a
warmup) and prints the ratio eager / ibnorm: above 1 means ibnorm is faster. The eager
version is SPEC section 1 line by line: standardize, psi, standardize again, gamma and beta.
"""
import argparse
import re
import statistics
import time

import torch

import ibnorm

PSI = {
    "s": lambda z, lam: torch.sign(z) * ((z.abs() + 1e-3) ** (1 / (1 + lam)) - 1e-3 ** (1 / (1 + lam))),
    "l": lambda z, lam: torch.sign(z) * torch.log1p(lam * z.abs()) / lam,
    "t": lambda z, lam: torch.tanh(lam * z) / lam,
}


def eager(x, weight, bias, variant, lam, eps):
    def standardize(v):
        mean = v.mean(-1, keepdim=True)
        var = v.var(-1, unbiased=False, keepdim=True)
        return (v - mean) / torch.sqrt(var + eps)
    return standardize(PSI[variant](standardize(x), lam)) * weight + bias


def timed(step, repeats, device):
    def once():
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start
    for _ in range(3):
        once()
    return statistics.median(once() for _ in range(repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="ibnorm-t", help="an IBNorm spec on the token area (ibnorm-s|l|t[:lambda=L]; not kappa=)")
    parser.add_argument("--shape", default="4096,1024", help="N,D")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    n, d = (int(v) for v in args.shape.split(","))
    norm = ibnorm.Norm(args.spec, d)
    match = re.match(r"ibnorm-([slt]):.*lambda=([0-9.e+-]+).*eps=([0-9.e+-]+)", norm.spec)
    # The canonical spec names area and lambda, and order only when it is not the default (between).
    if not match or ":area=token:" not in norm.spec + ":" or ":order=" in norm.spec:
        raise SystemExit(f"bench_norm: {norm.spec}: only IBNorm-S/L/T on the token area, order=between, have an eager twin")
    variant, lam, eps = match.group(1), float(match.group(2)), float(match.group(3))
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"{norm.spec}, [{n}, {d}] float32, median of {args.repeats}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'device':<8} {'pass':<18} {'ibnorm ms':>10} {'eager ms':>10} {'eager/ibnorm':>13}")
    for device in devices:
        layer = norm.to(device)
        x = torch.randn(n, d, device=device, requires_grad=True)
        weight = layer.weight.detach().clone().requires_grad_(True)
        bias = layer.bias.detach().clone().requires_grad_(True)
        torch.testing.assert_close(layer(x), eager(x, weight, bias, variant, lam, eps), rtol=1e-4, atol=1e-4)
        grad = torch.randn(n, d, device=device)
        runs = {
            "forward": (lambda: layer(x), lambda: eager(x, weight, bias, variant, lam, eps)),
            "forward+backward": (lambda: layer(x).backward(grad),
                                 lambda: eager(x, weight, bias, variant, lam, eps).backward(grad)),
        }
        for name, (ours, theirs) in runs.items():
            with torch.no_grad() if name == "forward" else torch.enable_grad():
                t_ours, t_theirs = timed(ours, args.repeats, device), timed(theirs, args.repeats, device)
            print(f"{device.type:<8} {name:<18} {t_ours * 1e3:>10.3f} {t_theirs * 1e3:>10.3f} {t_theirs / t_ours:>12.2f}x")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""PyTorch-from-Python peer of `ibn bench train`: the same MLP training step, timed.

    train_peer.py [--steps N] [--threads T]

The 12-10-7-5-4-3-2 network of Shwartz-Ziv & Tishby with LayerNorm before each tanh (ibn's
`mlp` with `--norm layernorm`), Adam (lr 1e-3), batch 64 of 12 binary inputs, cross-entropy:
forward, zero_grad, backward, step, as a Python user writes it. Prints one line,
`mlp steps/s <rate>`, after 5 warm-up steps. Needs Debian's python3-torch.
"""
import argparse
import time

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    widths = [12, 10, 7, 5, 4, 3]
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.LayerNorm(b), torch.nn.Tanh()]
    layers.append(torch.nn.Linear(widths[-1], 2))
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs = torch.randint(0, 2, (64, 12)).float()
    labels = torch.randint(0, 2, (64,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    print(f"mlp steps/s {args.steps / (time.perf_counter() - start):.1f}")


if __name__ == "__main__":
    main()

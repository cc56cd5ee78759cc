#!/usr/bin/python3
"""PyTorch-from-Python peer of `ibn bench train`: the same training steps, timed.

    train_peer.py [--models mlp,resnet,vit,gpt,llama] [--steps N] [--rounds R] [--min-seconds S]
                  [--threads T]

Each model is the twin of ibn's at the configuration `ibn bench train` times, with its default
normalizer, written as a Python user writes it (torch 1.13 has no nn.RMSNorm and no
F.scaled_dot_product_attention, so both are spelt out):

  mlp     12-10-7-5-4-3-2, Linear → LayerNorm → tanh (Shwartz-Ziv & Tishby), 12 binary inputs
  resnet  widths 16-32-64, 2 basic blocks per stage, channels-first LayerNorm (ConvNeXt's
          formula: statistics over C at every pixel), on 1×28×28 images, 10 classes
  vit     patch 4, dim 64, depth 2, 4 heads, MLP ratio 2, pre-norm LayerNorm, on 1×28×28 images
  gpt     dim 64, depth 2, 4 heads, hidden 256, learned positions, GELU, causal, LayerNorm;
          256 byte tokens, context 64
  llama   dim 64, depth 2, 4 heads, SwiGLU hidden 176, rotary embeddings, no biases, RMSNorm

Adam (lr 1e-3), batch 64, cross-entropy: forward, zero_grad, backward, step. After 5 warm-up
steps, R rounds, each of at least N steps and S seconds (as ibn times them). Prints one line
per model, `<model> steps/s <median rate> params <count>`: the parameter count lets `ibn bench
train` check that the twin has the shape of its model. Needs Debian's python3-torch.
"""
import argparse
import math
import os
import sys
import time


def thread_count():
    """--threads, read before torch loads: the thread pools size themselves from the environment then."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


# The allocator as ibn sets it (ibn::keep_freed_memory: freed blocks stay in the heap for reuse
# rather than going back to the kernel). glibc reads these at start-up, so the script starts
# itself again with them when they are missing.
KEEP_BYTES = str(512 << 20)
if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None or os.environ.get("MALLOC_TRIM_THRESHOLD_") is None:
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", KEEP_BYTES)
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", KEEP_BYTES)
    os.execv(sys.executable, [sys.executable] + sys.argv)

# The threads as ibn sets them: LibTorch's pool at --threads, OpenBLAS on the calling thread
# (unless the environment says otherwise, which ibn respects too). torch.set_num_threads alone
# would leave OpenBLAS's own pool at every core, spinning beside LibTorch's.
os.environ["OMP_NUM_THREADS"] = thread_count()
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

EPS = 1e-5


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of [N, C, H, W] (ConvNeXt's channels_first LayerNorm), with ibn's
    sequence of ops: centre once, multiply by rsqrt, one view of γ and β. (ConvNeXt's own code
    centres twice and divides by sqrt, which costs about 10 % more here.)"""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        centred = x - x.mean(1, keepdim=True)
        x = centred * torch.rsqrt(centred.square().mean(1, keepdim=True) + EPS)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))  # ibn's normalizers all have γ and β

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.weight + self.bias


def mlp():
    widths = [12, 10, 7, 5, 4, 3]
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.Tanh()]
    layers.append(nn.Linear(widths[-1], 2))
    return nn.Sequential(*layers)


def conv3x3(cin, cout, stride):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.norm1 = conv3x3(cin, cout, stride), ChannelsFirstLayerNorm(cout)
        self.conv2, self.norm2 = conv3x3(cout, cout, 1), ChannelsFirstLayerNorm(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), ChannelsFirstLayerNorm(cout))

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet(nn.Module):
    def __init__(self, widths=(16, 32, 64), blocks=2, classes=10):
        super().__init__()
        self.stem, self.stem_norm = conv3x3(1, widths[0], 1), ChannelsFirstLayerNorm(widths[0])
        layers, cin = [], widths[0]
        for s, width in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(cin, width, 2 if s > 0 and b == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        h = self.blocks(F.relu(self.stem_norm(self.stem(x))))
        return self.head(h.mean((2, 3)))


def attention(q, k, v, causal):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if causal:
        t = q.size(-2)
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ v


def rotary(x):
    t, d = x.size(-2), x.size(-1)
    frequencies = torch.exp(torch.arange(0, d, 2, dtype=x.dtype) / d * -math.log(10000.0))
    angles = torch.arange(t, dtype=x.dtype)[:, None] * frequencies[None, :]
    cos, sin = angles.cos(), angles.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), -1).flatten(-2)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(norm(x)), x + MLP(norm(x))."""

    def __init__(self, dim, heads, hidden, style):
        super().__init__()
        self.heads, self.style = heads, style
        bias = style != "llama"
        norm = RMSNorm if style == "llama" else nn.LayerNorm
        self.norm_attn, self.norm_mlp = norm(dim), norm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=bias), nn.Linear(dim, dim, bias=bias)
        self.up, self.down = nn.Linear(dim, hidden, bias=bias), nn.Linear(hidden, dim, bias=bias)
        self.gate = nn.Linear(dim, hidden, bias=False) if style == "llama" else None

    def forward(self, x):
        n, t, d = x.shape
        qkv = self.qkv(self.norm_attn(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.style == "llama":
            q, k = rotary(q), rotary(k)
        out = attention(q, k, v, causal=self.style != "vit")
        x = x + self.proj(out.transpose(1, 2).reshape(n, t, d))
        m = self.norm_mlp(x)
        inner = F.silu(self.gate(m)) * self.up(m) if self.style == "llama" else F.gelu(self.up(m))
        return x + self.down(inner)


class ViT(nn.Module):
    def __init__(self, patch=4, dim=64, depth=2, heads=4, mlp_ratio=2, classes=10, side=28):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.positions = nn.Parameter(torch.zeros(1, (side // patch) ** 2, dim).normal_(0, 0.02))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio * dim, "vit") for _ in range(depth)])
        self.norm_final = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        h = self.embed(x).flatten(2).transpose(1, 2) + self.positions
        return self.head(self.norm_final(self.blocks(h)).mean(1))


class Decoder(nn.Module):
    def __init__(self, style, dim=64, depth=2, heads=4, vocab=256, context=64):
        super().__init__()
        hidden = 4 * dim if style == "gpt" else (8 * dim // 3 + 7) // 8 * 8
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Parameter(torch.zeros(1, context, dim).normal_(0, 0.02)) if style == "gpt" else None
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden, style) for _ in range(depth)])
        self.norm_final = RMSNorm(dim) if style == "llama" else nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, x):
        h = self.tokens(x)
        if self.positions is not None:
            h = h + self.positions[:, : x.size(1)]
        return self.head(self.norm_final(self.blocks(h)))


# model name → (module, inputs, labels) for a batch of 64
def make_case(name):
    if name == "mlp":
        return mlp(), torch.randint(0, 2, (64, 12)).float(), torch.randint(0, 2, (64,))
    if name in ("resnet", "vit"):
        model = ResNet() if name == "resnet" else ViT()
        return model, torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    if name in ("gpt", "llama"):
        return Decoder(name), torch.randint(0, 256, (64, 64)), torch.randint(0, 256, (64, 64))
    raise SystemExit(f"train_peer.py: no twin for model '{name}'; expected some of: mlp, resnet, vit, gpt, llama")


def steps_per_second(model, inputs, labels, steps, rounds, min_seconds):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        done, seconds = 0, 0.0
        while done < steps or seconds < min_seconds:
            step()
            done += 1
            seconds = time.perf_counter() - start
        rates.append(done / seconds)
    return sorted(rates)[len(rates) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="mlp")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, inputs, labels = make_case(name)
        rate = steps_per_second(model, inputs, labels, args.steps, args.rounds, args.min_seconds)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name} steps/s {rate:.1f} params {params}", flush=True)


if __name__ == "__main__":
    main()

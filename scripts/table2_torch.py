#!/usr/bin/env python3
"""The Table 2 sweep in PyTorch, timed against `scalenet-experiments table2` in the same run.

Same protocol as `fixtures/table2.rs`: every LIBSVM file of --data, each row whitened, the section 9
network (inputs -> 384 -> 64 -> classes, ReLU) under 4 inits, 14 learning rates x --seeds seeds
trained together as one population (parameters with a leading population dimension, batched
matrix products: the fastest plain-PyTorch way to train hundreds of small networks), 5 epochs of
SGD with weight decay 1e-5, per-copy shuffles, per-sample rates (rate x minibatch on the mean
loss), the output calibrated to std 0.05 after the first minibatch, and the training loss on the
whole set at the end. Geometric variances are drawn by torch's generator, and the calculus's
fixed scalars are left out (a few element-wise products); the two tools' losses are therefore not
compared, only their time on the same work.

    pip install torch numpy   # not needed by anything else in the repository
    python3 scripts/table2_torch.py --data data/libsvm --batch-size 1 --max-examples 500

prints the time of each tool, each dataset's PyTorch time, and the ratio. The scalenet side runs
`cargo run --release --bin scalenet-experiments -- table2` with the same settings on a scratch
output folder (so nothing is resumed). --skip-scalenet times PyTorch alone.
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import torch
except ImportError:
    sys.exit("this script needs PyTorch: pip install torch")

INITS = ["arithmetic", "fan_in", "fan_out", "geometric"]


def read_libsvm(path):
    """Dense features and labels 0..C-1 (sorted numeric labels) of a LIBSVM file."""
    rows, labels, width = [], [], 0
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        label, *tokens = line.split()
        features = {}
        for token in tokens:
            key, value = token.split(":", 1)
            if key == "qid":
                continue
            index = int(key)
            features[index] = float(value)
            width = max(width, index)
        rows.append(features)
        labels.append(float(label))
    x = torch.zeros(len(rows), width)
    for r, features in enumerate(rows):
        for index, value in features.items():
            x[r, index - 1] = value
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(label) for label in labels])
    return x, y, len(classes)


def whiten_rows(x):
    centred = x - x.mean(dim=1, keepdim=True)
    std = centred.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
    return centred / std


def variance(init, fan_in, fan_out, gain=2.0):
    return {
        "geometric": gain / math.sqrt(fan_in * fan_out),
        "fan_in": gain / fan_in,
        "fan_out": gain / fan_out,
        "arithmetic": gain / (0.5 * (fan_in + fan_out)),
    }[init]


def train_population(x, y, classes, init, args):
    """Trains 14 rates x seeds copies together; returns the final training loss of each copy."""
    examples, inputs = x.shape
    rates = [2.0 ** -k for k in range(-1, 13)]
    population = len(rates) * args.seeds
    batch = max(1, min(args.batch_size, examples))
    copy_rates = torch.tensor([r * batch for r in rates for _ in range(args.seeds)]).view(population, 1, 1)
    sizes = [inputs, 384, 64, max(classes, 2)]
    generator = torch.Generator().manual_seed(0)
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        std = math.sqrt(variance(init, fan_in, fan_out))
        weights.append((torch.randn(population, fan_in, fan_out, generator=generator) * std).requires_grad_())
        biases.append(torch.zeros(population, 1, fan_out, requires_grad=True))
    scale = torch.ones(population, 1, 1)

    def forward(xs):
        h = xs
        for layer, (w, b) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(b, h, w)
            if layer < len(weights) - 1:
                h = torch.relu(h)
        return h * scale

    steps = examples // batch
    for epoch in range(args.epochs):
        orders = torch.stack([torch.randperm(examples, generator=generator) for _ in range(population)])
        for step in range(steps):
            index = orders[:, step * batch:(step + 1) * batch]
            xs, ys = x[index], y[index]
            if epoch == 0 and step == 0:
                with torch.no_grad():
                    out = forward(xs)
                    centred = out - out.mean(dim=(1, 2), keepdim=True)
                    scale = 0.05 / centred.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
            logits = forward(xs)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), ys.reshape(-1), reduction="none"
            ).view(population, batch).mean(dim=1).sum()
            params = weights + biases
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.mul_(1 - copy_rates * args.weight_decay).sub_(copy_rates * g)
    with torch.no_grad():
        logits = forward(x.unsqueeze(0).expand(population, -1, -1))
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.repeat(population), reduction="none"
        ).view(population, examples).mean(dim=1)
    return losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/libsvm"))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-examples", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-scalenet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    files = sorted(p for p in args.data.iterdir() if p.is_file() and p.suffix != ".md")
    start = time.perf_counter()
    for path in files:
        x, y, classes = read_libsvm(path)
        # A random subset, like the Rust tool's (not the same rows: a different generator).
        if x.shape[0] > args.max_examples:
            keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))[: args.max_examples]
            x, y = x[keep], y[keep]
        x = whiten_rows(x)
        began = time.perf_counter()
        for init in INITS:
            train_population(x, y, classes, init, args)
        print(f"{path.name:<20} {x.shape[0]:>5} examples  pytorch {time.perf_counter() - began:7.1f} s", flush=True)
    torch_time = time.perf_counter() - start
    print(f"pytorch {torch.__version__}, {args.threads} threads: {torch_time:.1f} s")
    if args.skip_scalenet:
        return
    with tempfile.TemporaryDirectory() as out:
        command = [
            "cargo", "run", "--quiet", "--release", "--bin", "scalenet-experiments", "--", "table2",
            "--data", str(args.data), "--out", out, "--batch-size", str(args.batch_size),
            "--max-examples", str(args.max_examples), "--seeds", str(args.seeds), "--epochs", str(args.epochs),
            "--threads", str(args.threads),
        ]
        # Built first, outside the timing.
        subprocess.run(["cargo", "build", "--quiet", "--release", "--bin", "scalenet-experiments"], check=True)
        began = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        scalenet_time = time.perf_counter() - began
    print(f"scalenet: {scalenet_time:.1f} s; pytorch / scalenet = {torch_time / scalenet_time:.2f}")


if __name__ == "__main__":
    main()

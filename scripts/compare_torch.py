#!/usr/bin/env python3
"""PyTorch's side of `scalenet-experiments compare` (issue 28): the comparison's two architectures
(fixtures/compare.rs) trained the way a PyTorch user would, under the same protocol, appending to
the same results.jsonl so that `scalenet-experiments compare --report-only` tables them together.

Methods:
  torch-batchnorm  BatchNorm after every convolution (pre-activation in the ResNet: BN, ReLU, conv),
                   Kaiming (fan-in, ReLU) init, biases only where no BatchNorm follows;
  torch-plain      the same networks without normalization, Kaiming init (the unnormalized default);
  torch-fixup      the ResNet with Fixup (Zhang, Dauphin & Ma 2019): each branch's last convolution
                   and the classifier start at zero, the branch's other convolution He-initialized
                   and scaled by L^(-1/(2m-2)) (L = 3 blocks, m = 2 layers), scalar biases before
                   every convolution and activation of a branch and a scalar multiplier after it.

Protocol (as the Rust tool's): the first --train-examples training and --test-examples test examples
of Fashion-MNIST's IDX files, pixels standardized with the training examples' mean and std; plain SGD
on the minibatch mean cross-entropy at a constant rate, no momentum, no weight decay, no augmentation;
each seed its own initialization and data order (reshuffled every epoch); test accuracy after the last
epoch, in evaluation mode (BatchNorm's running statistics). A run whose loss stops being finite is
recorded as diverged (test_accuracy null).

    python3 scripts/compare_torch.py --out docs/experiments/compare-fashion-b128 --epochs 2 \\
        --train-examples 6000 --test-examples 5000 --lr-grid 0.8,0.4,0.2,0.1,0.05 --seeds 2

PyTorch is optional (Debian: apt install python3-torch; or pip install torch numpy).
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("this script needs PyTorch: apt install python3-torch (Debian) or pip install torch numpy")


def read_idx(path):
    """An IDX file (gzipped or not) as a numpy array of its unsigned bytes."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        sys.exit(f"{path}: not an IDX file of unsigned bytes")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(dims)):
        sys.exit(f"{path}: the header promises {dims}, the file holds {body.size} values")
    return body.reshape(dims)


def find(folder, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    sys.exit(f"{folder} has no {stem}[.gz]; the comparison reads Fashion-MNIST's four IDX files "
             "(Debian: apt install dataset-fashion-mnist)")


def load(folder, train_examples, test_examples):
    train_x = read_idx(find(folder, "train-images-idx3-ubyte")).astype(np.float32)
    train_y = read_idx(find(folder, "train-labels-idx1-ubyte")).astype(np.int64)
    test_x = read_idx(find(folder, "t10k-images-idx3-ubyte")).astype(np.float32)
    test_y = read_idx(find(folder, "t10k-labels-idx1-ubyte")).astype(np.int64)
    if train_examples:
        train_x, train_y = train_x[:train_examples], train_y[:train_examples]
    if test_examples:
        test_x, test_y = test_x[:test_examples], test_y[:test_examples]
    # The Rust tool's ImageDataset::pixel_moments: f32 mean, then the std about it.
    mean = float(train_x.mean(dtype=np.float64))
    std = float(np.sqrt(((train_x - mean) ** 2).mean(dtype=np.float64)))
    as_images = lambda x: torch.from_numpy((x - mean) / max(std, 1e-12)).unsqueeze(1)
    return (as_images(train_x), torch.from_numpy(train_y)), (as_images(test_x), torch.from_numpy(test_y))


def kaiming(module):
    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def conv(cin, cout, kernel, stride=1, padding=0, bias=True):
    return kaiming(nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=bias))


class Block(nn.Module):
    """The comparison's pre-activation block: relu, conv, relu, conv, plus the shortcut (the
    identity, or a 2x2 stride-2 convolution of the raw input when the block downsamples), with
    BatchNorm before each ReLU when `norm`."""

    def __init__(self, cin, cout, downsample, norm):
        super().__init__()
        first = (2, 2, 0) if downsample else (3, 1, 1)
        self.bn1 = nn.BatchNorm2d(cin) if norm else nn.Identity()
        self.conv1 = conv(cin, cout, first[0], stride=first[1], padding=first[2], bias=not norm)
        self.bn2 = nn.BatchNorm2d(cout) if norm else nn.Identity()
        self.conv2 = conv(cout, cout, 3, padding=1)
        self.shortcut = conv(cin, cout, 2, stride=2) if downsample else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.shortcut(x)


class FixupBlock(nn.Module):
    """The same block with Fixup's scalar biases and multiplier."""

    def __init__(self, cin, cout, downsample, blocks):
        super().__init__()
        first = (2, 2, 0) if downsample else (3, 1, 1)
        self.conv1 = nn.Conv2d(cin, cout, first[0], stride=first[1], padding=first[2], bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_in", nonlinearity="relu")
        with torch.no_grad():
            self.conv1.weight.mul_(blocks ** (-1.0 / (2 * 2 - 2)))
        nn.init.zeros_(self.conv2.weight)
        self.biases = nn.Parameter(torch.zeros(4))
        self.scale = nn.Parameter(torch.ones(1))
        self.shortcut = conv(cin, cout, 2, stride=2) if downsample else nn.Identity()

    def forward(self, x):
        b = self.biases
        h = self.conv1(F.relu(x + b[0]) + b[1])
        h = self.conv2(F.relu(h + b[2]))
        return h * self.scale + b[3] + self.shortcut(x)


class ResNet(nn.Module):
    def __init__(self, method):
        super().__init__()
        norm, fixup = method == "torch-batchnorm", method == "torch-fixup"
        self.stem = conv(1, 16, 3, padding=1, bias=not norm)
        if fixup:
            self.blocks = nn.Sequential(FixupBlock(16, 16, False, 3), FixupBlock(16, 32, True, 3),
                                        FixupBlock(32, 64, True, 3))
        else:
            self.blocks = nn.Sequential(Block(16, 16, False, norm), Block(16, 32, True, norm),
                                        Block(32, 64, True, norm))
        self.bn = nn.BatchNorm2d(64) if norm else nn.Identity()
        self.fc = kaiming(nn.Linear(64 * 7 * 7, 10))
        if fixup:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        h = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(h.flatten(1))


class Vgg(nn.Module):
    def __init__(self, method):
        super().__init__()
        norm = method == "torch-batchnorm"
        layers = []
        for cin, cout, kernel, stride, padding in [(1, 16, 3, 1, 1), (16, 16, 3, 1, 1), (16, 32, 2, 2, 0),
                                                   (32, 32, 3, 1, 1), (32, 64, 2, 2, 0), (64, 64, 3, 1, 1)]:
            layers.append(conv(cin, cout, kernel, stride=stride, padding=padding, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)
        self.fc = kaiming(nn.Linear(64 * 7 * 7, 10))

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


METHODS = {"resnet": ["torch-batchnorm", "torch-plain", "torch-fixup"], "vgg": ["torch-batchnorm", "torch-plain"]}


def train(arch, method, rate, seed, data, args):
    (train_x, train_y), (test_x, test_y) = data
    torch.manual_seed(seed)
    model = (ResNet if arch == "resnet" else Vgg)(method)
    optimizer = torch.optim.SGD(model.parameters(), lr=rate)
    order = torch.Generator().manual_seed(seed * 7919 + 1)
    batch = max(1, min(args.batch_size, len(train_x)))
    steps = len(train_x) // batch
    last_epoch = 0.0
    for epoch in range(args.epochs):
        model.train()
        permutation = torch.randperm(len(train_x), generator=order)
        last_epoch = 0.0
        for step in range(steps):
            rows = permutation[step * batch:(step + 1) * batch]
            loss = F.cross_entropy(model(train_x[rows]), train_y[rows])
            if not math.isfinite(loss.item()):
                return None, None
            last_epoch += loss.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test_x), 500):
            logits = model(test_x[start:start + 500])
            correct += (logits.argmax(1) == test_y[start:start + 500]).sum().item()
    return correct / len(test_x), last_epoch / max(steps, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", required=True, help="the folder of the Rust tool's results.jsonl")
    parser.add_argument("--arch", default="resnet,vgg")
    parser.add_argument("--methods", default="torch-batchnorm,torch-plain,torch-fixup")
    parser.add_argument("--lr-grid", default="0.4,0.2,0.1,0.05,0.025,0.0125")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-examples", type=int, default=0, help="0: all")
    parser.add_argument("--test-examples", type=int, default=0, help="0: all")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.data, args.train_examples, args.test_examples)
    protocol = {"epochs": args.epochs, "batch": args.batch_size, "train_examples": len(data[0][0]),
                "test_examples": len(data[1][0])}
    os.makedirs(args.out, exist_ok=True)
    log = os.path.join(args.out, "results.jsonl")
    done = set()
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    if all(r.get(k) == v for k, v in protocol.items()):
                        done.add((r["method"], r["arch"], r["lr"], r["seed"]))
    rates = [float(r) for r in args.lr_grid.split(",")]
    wanted = args.methods.split(",")
    for arch in args.arch.split(","):
        for method in [m for m in METHODS[arch] if m in wanted]:
            for rate in rates:
                for seed in range(args.seeds):
                    if (method, arch, rate, seed) in done:
                        continue
                    started = time.time()
                    accuracy, final_loss = train(arch, method, rate, seed, data, args)
                    record = dict(protocol, method=method, arch=arch, lr=rate, seed=seed, test_accuracy=accuracy,
                                  final_loss=final_loss)
                    with open(log, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    shown = "diverged" if accuracy is None else f"{100 * accuracy:.2f}%"
                    print(f"{arch} {method} lr {rate} seed {seed}: test accuracy {shown} ({time.time() - started:.0f} s)",
                          flush=True)


if __name__ == "__main__":
    main()

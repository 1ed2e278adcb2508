#!/usr/bin/env python3
"""PyTorch's time for one f32 training step of the networks of `benches/training_step.rs`.

The same three networks as the Criterion bench (strided LeNet 3x32x32 at batch 64, the section 9
MLP 784-384-64-10 at batch 128, the small strided pre-activation ResNet 3x16x16 at batch 128), the
same step (forward, cross-entropy, backward, SGD), the calculus's fixed scalars as element-wise
products where the plan has them. Prints the median of --repeats timed steps after a warm-up; set
--threads to the thread count the Rust bench used (all cores by default for both).

    pip install torch
    cargo bench --bench training_step && python3 scripts/bench_torch.py
"""

import argparse
import os
import statistics
import sys
import time

try:
    import torch
    from torch import nn
except ImportError:
    sys.exit("this script needs PyTorch: pip install torch")


class Scaled(nn.Module):
    """A layer followed by a fixed multiplier, as the calculus inserts them."""

    def __init__(self, layer, factor=0.7):
        super().__init__()
        self.layer, self.factor = layer, factor

    def forward(self, x):
        return self.layer(x) * self.factor


def strided_lenet():
    return nn.Sequential(
        Scaled(nn.Conv2d(3, 6, 5, padding=2)), nn.ReLU(),
        Scaled(nn.Conv2d(6, 6, 2, stride=2)), nn.ReLU(),
        Scaled(nn.Conv2d(6, 16, 5)), nn.ReLU(),
        Scaled(nn.Conv2d(16, 16, 2, stride=2)), nn.ReLU(),
        nn.Flatten(),
        Scaled(nn.Linear(16 * 6 * 6, 120)), nn.ReLU(),
        Scaled(nn.Linear(120, 84)), nn.ReLU(),
        Scaled(nn.Linear(84, 10)),
    )


def mlp():
    return nn.Sequential(
        Scaled(nn.Linear(784, 384)), nn.ReLU(), Scaled(nn.Linear(384, 64)), nn.ReLU(), Scaled(nn.Linear(64, 10))
    )


class Block(nn.Module):
    """`alpha S(x) + beta F(x)`, pre-activation main branch of two convolutions."""

    def __init__(self, channels_in, channels_out, stride):
        super().__init__()
        first = nn.Conv2d(channels_in, channels_out, 2, stride=2) if stride == 2 else nn.Conv2d(
            channels_in, channels_out, 3, padding=1
        )
        self.main = nn.Sequential(nn.ReLU(), Scaled(first), nn.ReLU(), Scaled(nn.Conv2d(channels_out, channels_out, 3, padding=1)))
        self.shortcut = Scaled(nn.Conv2d(channels_in, channels_out, 2, stride=2)) if stride == 2 else nn.Identity()

    def forward(self, x):
        return 0.866 * self.shortcut(x) + 0.5 * self.main(x)


def strided_resnet():
    return nn.Sequential(
        Scaled(nn.Conv2d(3, 8, 3, padding=1)),
        Block(8, 8, 1), Block(8, 16, 2), Block(16, 32, 2),
        nn.ReLU(), nn.Flatten(), Scaled(nn.Linear(32 * 4 * 4, 10)),
    )


def time_step(model, input_shape, batch, repeats):
    x = torch.randn(batch, *input_shape)
    y = torch.zeros(batch, dtype=torch.long)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    for _ in range(10):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"pytorch {torch.__version__}, {args.threads} threads, ms per training step (median of {args.repeats})")
    for name, build, shape, batch in [
        ("strided LeNet 3x32x32", strided_lenet, (3, 32, 32), 64),
        ("MLP 784-384-64-10", mlp, (784,), 128),
        ("strided pre-activation ResNet 3x16x16", strided_resnet, (3, 16, 16), 128),
    ]:
        print(f"  {name}, batch {batch}: {time_step(build(), shape, batch, args.repeats):.2f} ms")


if __name__ == "__main__":
    main()

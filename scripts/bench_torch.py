#!/usr/bin/env python3
"""PyTorch's time for one f32 training step of the networks of `benches/training_step.rs`, and the ratios.

The bench writes each network's plan (layers, shapes, the calculus's fixed scalars, residual
weights) to target/criterion/training-step-networks.json; this script builds the same networks in
PyTorch from it (fixed scalars as element-wise products, as a user would write them), times the
same step (forward, cross-entropy, backward, SGD at lr 0.01), and prints its median beside the
medians Criterion recorded for scalenet and for the candle-nn version of each network.

    pip install torch
    cargo bench --bench training_step -- 'training step' && python3 scripts/bench_torch.py

Run both with the same thread count (all cores by default for both; RAYON_NUM_THREADS for the
bench, --threads here).

With --amp it times the mixed-precision steps instead (`cargo bench --bench training_step --
'mixed precision step'`): PyTorch in f32, in bf16 under autocast, and in f16 under autocast with
`torch.amp.GradScaler`, beside scalenet's f32, bf16 and f16 steps (f32 master weights, the
calculus's static loss scale).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

try:
    import torch
    from torch import nn
except ImportError:
    sys.exit("this script needs PyTorch: pip install torch")


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class LearnableScalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.scalar = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scalar


class ChannelBias(nn.Module):
    """A learnable bias per channel (dimension 1), zero at first."""

    def __init__(self, channels):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x + self.bias.view(1, -1, *([1] * (x.dim() - 2)))


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class Block(nn.Module):
    """`alpha * shortcut(x) + beta * main(x)`."""

    def __init__(self, alpha, beta, main, shortcut):
        super().__init__()
        self.alpha, self.beta, self.main, self.shortcut = alpha, beta, main, shortcut

    def forward(self, x):
        return self.alpha * self.shortcut(x) + self.beta * self.main(x)


def build(steps):
    layers = []
    for step in steps:
        if isinstance(step, str):
            known = {"relu": nn.ReLU, "flatten": nn.Flatten, "global_avg_pool": GlobalAvgPool, "scalar": LearnableScalar}
            if step not in known:
                sys.exit(f"no PyTorch equivalent for step {step}")
            layers.append(known[step]())
        elif "scale" in step:
            layers.append(Scale(step["scale"]))
        elif "conv" in step:
            c = step["conv"]
            layers.append(nn.Conv2d(c["in"], c["out"], c["kernel"], stride=c["stride"], padding=c["padding"], bias=c["bias"], groups=c.get("groups", 1)))
        elif "linear" in step:
            c = step["linear"]
            layers.append(nn.Linear(c["in"], c["out"], bias=c["bias"]))
        elif "bias" in step:
            layers.append(ChannelBias(step["bias"]))
        elif "avg_pool" in step:
            layers.append(nn.AvgPool2d(step["avg_pool"]))
        elif "block" in step:
            b = step["block"]
            layers.append(Block(b["alpha"], b["beta"], build(b["main"]), build(b["shortcut"])))
        else:
            sys.exit(f"no PyTorch equivalent for step {step}")
    return nn.Sequential(*layers)


def time_step(model, input_shape, batch, repeats, device, amp=None):
    """Median ms of one step; `amp` "bf16" runs it under autocast, "f16" under autocast with a GradScaler."""
    model = model.to(device)
    x = torch.randn(batch, *input_shape, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type) if amp == "f16" else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(model(x), y)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    for _ in range(10):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def criterion_medians(criterion_dir):
    """Median ms per benchmark id, from Criterion's latest run."""
    medians = {}
    for meta in criterion_dir.glob("**/new/benchmark.json"):
        full_id = json.loads(meta.read_text())["full_id"]
        estimates = json.loads((meta.parent / "estimates.json").read_text())
        medians[full_id] = estimates["median"]["point_estimate"] / 1e6
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=50)
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path(__file__).resolve().parent.parent / "target"))
    parser.add_argument("--criterion", type=Path, default=target / "criterion")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: the bench must have run with SCALENET_BENCH_DEVICE=cuda")
    parser.add_argument("--tf32", action="store_true", help="cuda: allow TF32 (PyTorch's default for convolutions)")
    parser.add_argument("--amp", action="store_true", help="time the mixed-precision steps (f32, bf16, f16)")
    args = parser.parse_args()
    device = torch.device(args.device)
    # f32 exact unless --tf32, and cuDNN's algorithms measured per shape, as scalenet's cudnn path does.
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    manifest = args.criterion / "training-step-networks.json"
    if not manifest.exists():
        sys.exit(f"{manifest} is missing: run `cargo bench --bench training_step` first")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    medians = criterion_medians(args.criterion)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.threads} threads"
    tf32 = f", TF32 {'on' if args.tf32 else 'off'}, cudnn.benchmark" if args.device == "cuda" else ""
    print(f"pytorch {torch.__version__}, {where}{tf32}, ms per training step (medians)")
    if args.amp:
        amp_table(manifest, medians, args, device)
        return
    print("| network | scalenet | candle-nn | PyTorch | scalenet / PyTorch | scalenet / candle-nn |")
    print("| --- | --- | --- | --- | --- | --- |")
    for network in json.loads(manifest.read_text()):
        if network.get("device", "cpu") != args.device:
            sys.exit(f"the bench ran on {network.get('device', 'cpu')}, not {args.device}: rerun one of them")
        torch_ms = time_step(build(network["steps"]), network["input"], network["batch"], args.repeats, device)
        ours = medians.get(f"{network['group']}/scalenet")
        candle = medians.get(f"{network['group']}/candle-nn")
        fmt = lambda v: "-" if v is None else f"{v:.2f}"
        ratio = lambda a, b: "-" if a is None or b is None else f"{a / b:.2f}x"
        print(
            f"| {network['name']}, batch {network['batch']} | {fmt(ours)} | {fmt(candle)} | {torch_ms:.2f} "
            f"| {ratio(ours, torch_ms)} | {ratio(ours, candle)} |"
        )


def amp_table(manifest, medians, args, device):
    """scalenet's f32 / bf16 / f16 steps beside PyTorch's f32, autocast bf16 and autocast f16 + GradScaler."""
    print("| network | precision | scalenet | PyTorch | scalenet / PyTorch | scalenet vs its f32 | PyTorch vs its f32 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for network in json.loads(manifest.read_text()):
        group = f"mixed precision step/{network['name']}, batch {network['batch']}"
        if f"{group}/f32" not in medians:
            continue
        ours, theirs = {}, {}
        for precision in ["f32", "bf16", "f16"]:
            ours[precision] = medians.get(f"{group}/{precision}")
            model = build(network["steps"])
            amp = None if precision == "f32" else precision
            theirs[precision] = time_step(model, network["input"], network["batch"], args.repeats, device, amp)
        for precision in ["f32", "bf16", "f16"]:
            a, b = ours[precision], theirs[precision]
            speed = lambda t, base: "-" if t is None or base is None else f"{base / t:.2f}x"
            print(
                f"| {network['name']}, batch {network['batch']} | {precision} | {'-' if a is None else f'{a:.2f}'} "
                f"| {b:.2f} | {'-' if a is None else f'{a / b:.2f}x'} | {speed(a, ours['f32'])} | {speed(b, theirs['f32'])} |"
            )


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Trains the digits LeNet and the strided ResNet of the examples in f32, bf16 and f16 (f32 master
# weights, the loss scale the calculus chooses) for the examples' epochs over 3 seeds, and prints
# the final training loss per run, the median per precision against f32's, and the steps f16
# skipped (docs/precision.md). About 5 minutes per seed on 2 cores; finished runs are kept, so a
# rerun with more seeds adds to them.
#
#   bash scripts/mixed_precision.sh [seeds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-3}
out=target/mixed-precision
mkdir -p "$out"
cargo build --release --example lenet --example resnet
for example in lenet resnet; do
    for precision in f32 bf16 f16; do
        for seed in $(seq 0 $((seeds - 1))); do
            log="$out/$example-$precision-$seed.log"
            # A finished run is kept: rerun with more seeds to add to them.
            if grep -q "epoch  8:" "$log" 2>/dev/null; then continue; fi
            target/release/examples/$example --precision "$precision" --seed "$seed" >"$log" 2>&1
        done
    done
done
python3 - "$out" "$seeds" <<'PY'
import re, statistics, sys
out, seeds = sys.argv[1], int(sys.argv[2])
print("| network | precision | final train loss per seed | median | vs f32 | steps skipped |")
print("|---|---|---|---|---|---|")
for example in ["lenet", "resnet"]:
    medians = {}
    for precision in ["f32", "bf16", "f16"]:
        losses, skipped = [], []
        for seed in range(seeds):
            text = open(f"{out}/{example}-{precision}-{seed}.log").read()
            losses.append(float(re.findall(r"train loss ([0-9.]+)", text)[-1]))
            found = re.search(r"(\d+) of (\d+) steps skipped", text)
            skipped.append(f"{found.group(1)}/{found.group(2)}" if found else "-")
        medians[precision] = statistics.median(losses)
        ratio = medians[precision] / medians["f32"]
        print(f"| {example} | {precision} | {', '.join(f'{l:.4f}' for l in losses)} | {medians[precision]:.4f} "
              f"| {100 * (ratio - 1):+.1f}% | {', '.join(skipped)} |")
PY

#!/usr/bin/env bash
# Builds the GPU checks here (no GPU needed) and packs them small for a GPU machine, which has no
# Rust toolchain: the GPU tests (tests/gpu.rs), the training-step bench, the lenet and resnet50
# examples, the experiments tool and the lenet example with the NCCL engine (`lenet-nccl`),
# stripped and xz-compressed (about 50 MB to 5-7 MB each), into
# gpu-pack/ (ignored by git; about 30 MB in all).
#
#   scripts/cuda/pack.sh [--features cuda|cudnn]     # default cudnn
#
# Then, on the GPU machine, in a copy of this repository with gpu-pack/ beside it:
#
#   bash scripts/cuda/run-gpu-checks.sh [OUT]
#
# (with this project's device tool: carry gpu-pack). docs/gpu.md says what it measures.
set -euo pipefail
cd "$(dirname "$0")/../.."
features=cudnn
case "${1:-}" in
    --features) features="$2" ;;
    "") ;;
    *) echo "scripts/cuda/pack.sh: unknown argument '$1' (--features cuda|cudnn)" >&2; exit 2 ;;
esac
. scripts/cuda/env.sh

pack=gpu-pack
rm -rf "$pack.tmp"
mkdir -p "$pack.tmp"
# The same selection as build.sh, so that a pack after a build compiles nothing (a narrower one
# unifies dependency features differently and rebuilds half of them).
cargo build --release --locked --workspace --features "$features" --tests --examples --bins --benches \
    --message-format=json-render-diagnostics > "$pack.tmp/artifacts.json"
# pack_artifacts SUFFIX NAME...: the executables NAME of cargo's messages in artifacts.json,
# stripped and xz-compressed into the pack as NAME+SUFFIX.xz.
pack_artifacts() {
    python3 - "$pack.tmp" "$@" <<'PY'
import json, lzma, os, shutil, subprocess, sys
pack, suffix, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
for line in open(os.path.join(pack, "artifacts.json")):
    message = json.loads(line)
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    name = message["target"]["name"]
    # A binary's own unit-test harness has the binary's name: leave it out.
    if name not in wanted or ("bin" in message["target"]["kind"] and message["profile"]["test"]):
        continue
    plain = os.path.join(pack, name + suffix)
    shutil.copyfile(message["executable"], plain)
    subprocess.run(["strip", plain], check=True)
    with open(plain, "rb") as src, lzma.open(plain + ".xz", "wb", preset=6) as dst:
        shutil.copyfileobj(src, dst)
    os.remove(plain)
    print(f"{name + suffix}: {os.path.getsize(plain + '.xz') / 1e6:.1f} MB packed", file=sys.stderr)
PY
}
pack_artifacts "" gpu training_step lenet resnet50 scalenet-experiments
# The lenet example again with the NCCL engine (data-parallel training), linked against the stub
# libnccl; the GPU machine loads the real one (PyTorch's nvidia-nccl wheel). Optional: a failure
# here packs the rest.
if cargo build --release --locked --features "$features,nccl" --example lenet \
    --message-format=json-render-diagnostics > "$pack.tmp/artifacts.json"; then
    pack_artifacts -nccl lenet
else
    echo "scripts/cuda/pack.sh: the NCCL build of lenet failed; packing without it" >&2
fi
rm "$pack.tmp/artifacts.json"
echo "$features" > "$pack.tmp/features"
git rev-parse HEAD > "$pack.tmp/commit"
rm -rf "$pack" && mv "$pack.tmp" "$pack"
echo "scripts/cuda/pack.sh: $pack/ holds $(ls "$pack" | grep -c '\.xz$') binaries built with --features $features" >&2

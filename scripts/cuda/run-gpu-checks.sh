#!/usr/bin/env bash
# Runs the GPU checks that scripts/cuda/pack.sh packed into gpu-pack/, on a GPU machine without
# Rust: unpacks them, finds the CUDA libraries (PyTorch's `nvidia` wheels, the driver's libcuda),
# then runs the GPU tests, the lenet example on the GPU, the training-step bench on the GPU and,
# when PyTorch is installed, the same networks in PyTorch with the ratios; then data-parallel
# training over NCCL (one process, and two when there are two GPUs) against the plain run. Logs go to OUT
# (default gpu-out/), one file per check, and a summary to stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-gpu-out}"
mkdir -p "$out"
[ -d gpu-pack ] || { echo "no gpu-pack/ here: run scripts/cuda/pack.sh on the build machine first" >&2; exit 2; }
echo "packed from commit $(cat gpu-pack/commit) with --features $(cat gpu-pack/features)"
bin=$(mktemp -d)
python3 - gpu-pack "$bin" <<'PY'
import lzma, os, shutil, sys
src, dst = sys.argv[1:]
for name in os.listdir(src):
    if name.endswith(".xz"):
        target = os.path.join(dst, name[:-3])
        with lzma.open(os.path.join(src, name)) as packed, open(target, "wb") as plain:
            shutil.copyfileobj(packed, plain)
        os.chmod(target, 0o755)
PY
libs=$(python3 -c 'import glob, os, nvidia; root = os.path.dirname(nvidia.__path__[0]); print(":".join(sorted(set(os.path.dirname(p) for p in glob.glob(root + "/nvidia/**/lib*.so*", recursive=True)))))' 2>/dev/null || true)
export LD_LIBRARY_PATH="${libs}${libs:+:}/usr/local/nvidia/lib64:/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'

status=0
run() { # run NAME COMMAND...: logs to $out/NAME.log, prints the tail
    local name="$1"; shift
    echo "== $name: $*"
    local start=$SECONDS
    "$@" > "$out/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.log"
    echo "== $name: exit $rc in $((SECONDS - start)) s"
    [ $rc -eq 0 ] || status=1
}
run gpu-tests "$bin/gpu" --nocapture --test-threads 1
run lenet "$bin/lenet" --device cuda --epochs 8
run resnet50 "$bin/resnet50" --device cuda --batch 32
export CARGO_TARGET_DIR="$out/target"
SCALENET_BENCH_DEVICE=cuda run bench "$bin/training_step" --bench 'training step'
torch=$(python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null && echo yes)
[ -n "$torch" ] && run torch python3 scripts/bench_torch.py --device cuda --criterion "$out/target/criterion"
# TF32 allowed on both sides (PyTorch's default for convolutions): the ResNet-50 only.
SCALENET_BENCH_DEVICE=cuda SCALENET_TF32=1 run bench-tf32 "$bin/training_step" --bench 'training step, tf32/ResNet-50'
[ -n "$torch" ] && run torch-tf32 python3 scripts/bench_torch.py --device cuda --tf32 --criterion "$out/target/criterion"
# Mixed precision: the f32, bf16 and f16 steps (f32 masters, the calculus's loss scale), the
# ResNet-50 among them, against PyTorch's autocast (bf16) and autocast + GradScaler (f16); then the
# digits LeNet trained in f16 on the GPU.
SCALENET_BENCH_DEVICE=cuda run bench-mixed "$bin/training_step" --bench 'mixed precision step'
[ -n "$torch" ] && run torch-amp python3 scripts/bench_torch.py --device cuda --amp --criterion "$out/target/criterion"
run lenet-f16 "$bin/lenet" --device cuda --epochs 8 --precision f16
run lenet-bf16 "$bin/lenet" --device cuda --epochs 8 --precision bf16
# Data-parallel training over NCCL: one process (the collectives run all the same) must end 20
# steps with the parameters of the plain run; two processes of 32 (when there are two
# GPUs) with those of one process of 64, within 1e-5.
if [ -x "$bin/lenet-nccl" ]; then
    ckpt="$out/checkpoints"
    mkdir -p "$ckpt" && rm -f "$ckpt"/*
    run nccl-plain "$bin/lenet" --device cuda --max-steps 20 --batch-size 32 --save "$ckpt/plain-32.safetensors"
    run nccl-world1 env RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 "$bin/lenet-nccl" --distributed --device cuda \
        --max-steps 20 --batch-size 32 --save "$ckpt/nccl-1x32.safetensors"
    # cuDNN's backward convolutions may sum in any order: within 1e-5, not bit for bit.
    run nccl-world1-compare python3 scripts/compare_checkpoints.py \
        "$ckpt/plain-32.safetensors" "$ckpt/nccl-1x32.safetensors"
    if [ "$(nvidia-smi --list-gpus 2>/dev/null | wc -l)" -ge 2 ]; then
        run nccl-plain-64 "$bin/lenet" --device cuda --max-steps 20 --batch-size 64 --save "$ckpt/plain-64.safetensors"
        id="$ckpt/nccl-id"
        world2() {
            for r in 0 1; do
                RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 SCALENET_NCCL_ID_FILE="$id" "$bin/lenet-nccl" --distributed \
                    --device cuda --max-steps 20 --batch-size 32 --save "$ckpt/nccl-2x32.safetensors" &
            done
            wait
        }
        run nccl-world2 world2
        run nccl-world2-compare python3 scripts/compare_checkpoints.py \
            "$ckpt/plain-64.safetensors" "$ckpt/nccl-2x32.safetensors"
    fi
fi
exit $status

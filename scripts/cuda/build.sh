#!/usr/bin/env bash
# Builds scalenet with `--features cuda` or `--features cudnn` on a machine without a GPU or a
# CUDA installation, so the CUDA code paths stay compiled (CI runs this) and the binaries can be
# taken to a GPU machine (scripts/cuda/pack.sh).
#
#   scripts/cuda/build.sh                    # features cudnn (cuda + cuDNN): tests, examples, benches, tools
#   scripts/cuda/build.sh --features cuda    # candle's CUDA backend without cuDNN
#   scripts/cuda/build.sh --check            # cargo check only (no nvcc kernels linked; faster)
#
# Then it type-checks scalenet with `--features nccl` (data-parallel training over NCCL).
#
# What it does, once per machine (idempotent; later runs take seconds):
# - nvcc and the CUDA 13.0 libraries from PyPI wheels, in a virtual environment under
#   $SCALENET_CUDA_HOME (default ~/.cache/scalenet/cuda). 13.0 matches the GPU machines' driver
#   (580): PTX from a newer nvcc may not load there.
# - link-time stubs for libcuda (the driver, which only a GPU machine has) and libcudnn (no wheel
#   needed to link): an empty function for every symbol cudarc binds, from cudarc's own sources.
#   At run time the real libraries are loaded (cudarc opens them dynamically by soname).
# - builds into $SCALENET_CUDA_TARGET (default ~/.cache/scalenet/cuda-target), a target directory
#   that persists between runs and clones: a cold build takes about 15 minutes on 2 cores.
#
# The recipe this follows, and what was seen on an H100: ../shared/cuda-build.md when present;
# docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

features=cudnn
mode=build
while [ $# -gt 0 ]; do
    case "$1" in
        --features) features="$2"; shift 2 ;;
        --check) mode=check; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "scripts/cuda/build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$features" in
    cuda|cudnn) ;;
    *) echo "scripts/cuda/build.sh: --features must be cuda or cudnn, not '$features'" >&2; exit 2 ;;
esac

. "$(dirname "$0")/env.sh"

echo "scripts/cuda/build.sh: cargo $mode --release --features $features (target $CARGO_TARGET_DIR)" >&2
cargo "$mode" --release --locked --workspace --features "$features" --tests --examples --bins --benches
# The NCCL engine of data-parallel training, type-checked (linking it needs libnccl, which only
# the GPU machines have; the binaries above do not include it).
echo "scripts/cuda/build.sh: cargo check --release -p scalenet --features nccl" >&2
cargo check --release --locked -p scalenet --features nccl

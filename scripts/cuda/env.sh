# Sourced by scripts/cuda/build.sh and pack.sh: installs nvcc and the CUDA 13.0 libraries from
# PyPI wheels and the link-time stubs (once per machine), and exports what candle's CUDA build
# reads (PATH, CUDA_ROOT, CUDA_COMPUTE_CAP, RUSTFLAGS, CARGO_TARGET_DIR). See build.sh.

home="${SCALENET_CUDA_HOME:-$HOME/.cache/scalenet/cuda}"
export CARGO_TARGET_DIR="${SCALENET_CUDA_TARGET:-$HOME/.cache/scalenet/cuda-target}"
# The wheels of CUDA 13.0.x (the versions of ../shared/cuda-build.md).
wheels=(
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-curand==10.4.0.35
    nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14
)
stamp="$home/installed-$(printf '%s\n' "${wheels[@]}" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    echo "scripts/cuda/env.sh: installing nvcc and the CUDA 13.0 libraries into $home/venv" >&2
    mkdir -p "$home"
    python3 -m venv "$home/venv"
    "$home/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${wheels[@]}"
    touch "$stamp"
fi
site=$("$home/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cuda_root="$site/nvidia/cu13"
[ -x "$cuda_root/bin/nvcc" ] || { echo "scripts/cuda/env.sh: no nvcc in $cuda_root/bin" >&2; exit 1; }

# Stubs for linking, regenerated when cudarc's version changes.
cargo fetch --quiet --locked
cudarc=$(cargo metadata --format-version 1 --locked --features cudnn |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc").rsplit("/",1)[0])')
stubs="$home/stubs-$(basename "$cudarc")"
if [ ! -e "$stubs/libcudnn.so" ]; then
    mkdir -p "$stubs.tmp"
    stub() { # stub NAME SONAME SOURCES... : a shared library defining every `pub unsafe fn PREFIX..` of the sources
        local name="$1" soname="$2"; shift 2
        grep -ho 'pub unsafe fn [A-Za-z_][A-Za-z0-9_]*' "$@" | awk '{print $4}' | sort -u |
            sed 's/.*/void &(void) {}/' > "$stubs.tmp/$name.c"
        gcc -shared -fPIC -o "$stubs.tmp/$name.so" "$stubs.tmp/$name.c" "-Wl,-soname,$soname"
    }
    stub libcuda libcuda.so.1 "$cudarc/src/driver/sys/mod.rs"
    stub libcudnn libcudnn.so.9 "$cudarc"/src/cudnn/sys/*.rs
    for lib in cublas cublasLt cudart nvrtc; do ln -sf "$cuda_root/lib/lib$lib.so.13" "$stubs.tmp/lib$lib.so"; done
    ln -sf "$cuda_root/lib/libcurand.so.10" "$stubs.tmp/libcurand.so"
    rm -rf "$stubs" && mv "$stubs.tmp" "$stubs"
fi

# libnccl for the NCCL engine (`--features nccl`), apart so that machines with the stubs above
# get it without rebuilding them.
if [ ! -e "$stubs/libnccl.so" ]; then
    grep -ho 'pub unsafe fn [A-Za-z_][A-Za-z0-9_]*' "$cudarc"/src/nccl/sys/*.rs | awk '{print $4}' | sort -u |
        sed 's/.*/void &(void) {}/' > "$stubs/libnccl.c"
    gcc -shared -fPIC -o "$stubs/libnccl.so.tmp" "$stubs/libnccl.c" -Wl,-soname,libnccl.so.2
    mv "$stubs/libnccl.so.tmp" "$stubs/libnccl.so"
fi

export PATH="$cuda_root/bin:$PATH"
export CUDA_ROOT="$cuda_root" CUDA_PATH="$cuda_root" CUDA_HOME="$cuda_root"
# sm_90 (H100, H200): the machines this project is lent. Set CUDA_COMPUTE_CAP=80 for A100s too.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$stubs"


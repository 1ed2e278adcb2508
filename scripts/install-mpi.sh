#!/usr/bin/env bash
# Installs what `--features mpi` needs to build and run, from Debian's packages: Open MPI (the
# library and `mpirun`) and libclang (bindgen generates the `mpi` crate's bindings from mpi.h).
# Idempotent; as root, or with sudo when it is there. `.ci/run` calls it.
set -euo pipefail
packages=(openmpi-bin libopenmpi-dev libclang-dev)
if dpkg -s "${packages[@]}" >/dev/null 2>&1; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "scripts/install-mpi.sh: run as root (apt-get install ${packages[*]})" >&2; exit 1; }
    sudo=sudo
fi
echo "scripts/install-mpi.sh: apt-get install ${packages[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null

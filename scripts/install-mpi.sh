#!/usr/bin/env bash
# Installs what `--features mpi` needs to build and run, from Debian's packages: Open MPI (the
# library and `mpirun`) and libclang (bindgen generates the `mpi` crate's bindings from mpi.h).
# Idempotent; as root, or with sudo when it is there. `.ci/run` calls it.
set -euo pipefail
exec bash "$(dirname "$0")/apt-install.sh" scripts/install-mpi.sh openmpi-bin libopenmpi-dev libclang-dev

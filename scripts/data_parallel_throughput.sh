#!/usr/bin/env bash
# Throughput of data-parallel training over MPI on this machine: the digits LeNet and the small
# strided ResNet of the examples, 2 epochs, alone (no mpirun: all cores for one process) and under
# `mpirun -np 1` and `-np 2`, each configuration run `repeats` times (default 3); prints every
# run's summary line (step time, time spent averaging gradients, examples per second).
#
#   bash scripts/install-mpi.sh && bash scripts/data_parallel_throughput.sh [repeats]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-3}"
cargo build --release --quiet --features mpi --example lenet --example resnet
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 # CI's containers run as root
for example in lenet resnet; do
    for run in "alone 32" "alone 64" "1 32" "1 64" "2 32"; do
        set -- $run
        for _ in $(seq "$repeats"); do
            if [ "$1" = alone ]; then
                line=$(target/release/examples/$example --distributed --batch-size "$2" --epochs 2 | grep "steps,")
            else
                line=$(mpirun -np "$1" --oversubscribe target/release/examples/$example --distributed \
                    --batch-size "$2" --epochs 2 | grep "steps,")
            fi
            echo "$example processes=$1 batch/process=$2: $line"
        done
    done
done

#!/usr/bin/env bash
# Installs Debian's PyTorch (python3-torch, CPU) for the PyTorch side of the comparison
# (scripts/compare_torch.py) and its test. Idempotent; as root, or with sudo when it is there.
# `.ci/run` calls it. Nothing else in the repository needs PyTorch.
set -euo pipefail
exec bash "$(dirname "$0")/apt-install.sh" scripts/install-torch.sh python3-torch python3-numpy

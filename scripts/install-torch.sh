#!/usr/bin/env bash
# Installs Debian's PyTorch (python3-torch, CPU) for the PyTorch side of the comparison
# (scripts/compare_torch.py) and its test. Idempotent; as root, or with sudo when it is there.
# `.ci/run` calls it. Nothing else in the repository needs PyTorch.
set -euo pipefail
packages=(python3-torch python3-numpy)
if dpkg -s "${packages[@]}" >/dev/null 2>&1; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "scripts/install-torch.sh: run as root (apt-get install ${packages[*]})" >&2; exit 1; }
    sudo=sudo
fi
echo "scripts/install-torch.sh: apt-get install ${packages[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null

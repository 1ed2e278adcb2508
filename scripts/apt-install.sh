#!/usr/bin/env bash
# Installs Debian packages unless they are all there already: `scripts/apt-install.sh WHO PACKAGE...`
# (WHO names the calling script in messages). As root, or with sudo when it is there.
set -euo pipefail
who=$1
shift
if dpkg -s "$@" >/dev/null 2>&1; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "$who: run as root (apt-get install $*)" >&2; exit 1; }
    sudo=sudo
fi
echo "$who: apt-get install $*" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null

#!/bin/sh
# Installs the Debian packages tact needs to build, test and run its demo,
# if any is missing. Runs as root on Debian bookworm; does nothing when all
# are present.
set -eu

packages="cmake make g++ libcaf-dev libssl-dev libboost-dev
libboost-filesystem-dev libc-ares-dev catch2 python3 openssl redis-tools testssl.sh
clangd ${TACT_EXTRA_PACKAGES:-}"

missing=""
for p in $packages; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done

if [ -n "$missing" ]; then
  echo "installing:$missing"
  if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (or install these packages first):$missing" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing
fi

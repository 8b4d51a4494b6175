#!/usr/bin/env bash
# Builds local stand-ins for the two public base images the Dockerfile uses, for machines that
# cannot pull images (this one): `debian:bookworm-slim` from a debootstrap minbase root, and
# `rust:1.95-bookworm` from the same root plus a C toolchain and the host's rustup toolchain
# (copied, not downloaded). The Dockerfile then builds unchanged.
#
#   sudo scripts/make-base-images.sh          # needs root, debootstrap, docker
#
# Environment: MIRROR (Debian mirror, default deb.debian.org), RUST_TOOLCHAIN (default 1.95.0),
# FORCE=1 to rebuild images that already exist.
set -euo pipefail

MIRROR="${MIRROR:-http://deb.debian.org/debian}"
TOOLCHAIN="${RUST_TOOLCHAIN:-1.95.0}"
RUSTUP_HOME_HOST="${RUSTUP_HOME:-$HOME/.rustup}"
CARGO_HOME_HOST="${CARGO_HOME:-$HOME/.cargo}"
WORK="$(mktemp -d /tmp/flotilla-base.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

if ! command -v debootstrap >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
for tool in debootstrap docker tar; do
  command -v "$tool" >/dev/null || { echo "need $tool (apt-get install debootstrap docker.io)" >&2; exit 1; }
done

have() { [ "${FORCE:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

if have debian:bookworm-slim; then
  echo "debian:bookworm-slim exists (FORCE=1 to rebuild)"
else
  echo "=== debootstrap bookworm minbase"
  debootstrap --variant=minbase bookworm "$WORK/slim" "$MIRROR" >"$WORK/slim.log" 2>&1 \
    || { tail -20 "$WORK/slim.log" >&2; exit 1; }
  # What the official slim image also drops: docs, man pages, apt lists.
  rm -rf "$WORK/slim"/usr/share/{doc,man,info}/* "$WORK/slim"/var/lib/apt/lists/* "$WORK/slim"/var/cache/apt/*.bin
  tar -C "$WORK/slim" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - debian:bookworm-slim
fi

# An image that exists but cannot run cargo (an earlier, broken attempt) is rebuilt.
if have rust:1.95-bookworm && docker run --rm rust:1.95-bookworm cargo --version >/dev/null 2>&1; then
  echo "rust:1.95-bookworm exists (FORCE=1 to rebuild)"
else
  [ -d "$RUSTUP_HOME_HOST/toolchains/$TOOLCHAIN-x86_64-unknown-linux-gnu" ] \
    || { echo "no rustup toolchain $TOOLCHAIN under $RUSTUP_HOME_HOST" >&2; exit 1; }
  echo "=== debootstrap bookworm with a C toolchain"
  debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev,make,pkg-config,git \
    bookworm "$WORK/rust" "$MIRROR" >"$WORK/rust.log" 2>&1 || { tail -20 "$WORK/rust.log" >&2; exit 1; }
  rm -rf "$WORK/rust"/usr/share/{doc,man,info}/* "$WORK/rust"/var/lib/apt/lists/*
  # This local stand-in trusts what the host trusts (e.g. an egress proxy's CA), so cargo in the
  # builder can reach crates.io from here; the public image has its own bundle.
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/rust/etc/ssl/certs/ca-certificates.crt"
  echo "=== copying the host's rust $TOOLCHAIN toolchain"
  mkdir -p "$WORK/rust/usr/local/rustup/toolchains" "$WORK/rust/usr/local/cargo/bin"
  # The host's toolchain directory may itself be a symlink (e.g. to "stable"): copy its target.
  mkdir -p "$WORK/rust/usr/local/rustup/toolchains/$TOOLCHAIN-x86_64-unknown-linux-gnu"
  cp -a "$(readlink -f "$RUSTUP_HOME_HOST/toolchains/$TOOLCHAIN-x86_64-unknown-linux-gnu")/." \
    "$WORK/rust/usr/local/rustup/toolchains/$TOOLCHAIN-x86_64-unknown-linux-gnu/"
  # The official image runs the toolchain through rustup's proxies in /usr/local/cargo/bin;
  # copied without rustup's own metadata those would try to download the channel again, so the
  # same paths point straight at the toolchain's binaries instead.
  for b in "$WORK/rust/usr/local/rustup/toolchains/$TOOLCHAIN-x86_64-unknown-linux-gnu"/bin/*; do
    ln -sf "/usr/local/rustup/toolchains/$TOOLCHAIN-x86_64-unknown-linux-gnu/bin/$(basename "$b")" \
      "$WORK/rust/usr/local/cargo/bin/$(basename "$b")"
  done
  tar -C "$WORK/rust" -c . | docker import \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$TOOLCHAIN" \
    --change 'CMD ["bash"]' - rust:1.95-bookworm
fi

docker run --rm rust:1.95-bookworm cargo --version
docker run --rm debian:bookworm-slim sh -c 'echo debian $(cat /etc/debian_version)'

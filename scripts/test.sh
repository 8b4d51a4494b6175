#!/usr/bin/env bash
# Runs Flotilla's whole test suite on a fresh Debian bookworm machine.
#
# It installs what the tests need first (Debian's etcd-client for `etcdctl`, strace for the
# fsync test, prometheus for `promtool`, protobuf-compiler for the etcd-client test crate,
# python3-venv and PyPI's moto for the backup tests' S3 server), so a
# missing install step fails here, loudly, rather than hiding behind a machine that was
# prepared by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client)
command -v strace >/dev/null 2>&1 || need_pkgs+=(strace)
# promtool, for the alert rules' unit tests (Debian's prometheus package carries it).
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
# protoc, for the etcd-client dev-dependency's build script (Flotilla's own protos use protox).
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
# python3 with venv, for the S3 test server the backup tests run (moto, from PyPI, below).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_pkgs+=(python3 python3-venv)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${need_pkgs[@]}"
fi
etcdctl version
strace -V | head -1
promtool --version 2>&1 | head -1
protoc --version
# The backup tests' S3 server (moto, pinned, into a venv under target/): installed here so
# crates/node/tests/backup.rs never skips in CI.
scripts/s3-test-server.sh --install
# ... and told that a server that does not start is a failure here, not a skip.
export FLOTILLA_S3_REQUIRED=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Benches run once each in test mode (criterion's `--test`): they keep compiling and working,
# but the suite never times anything.
cargo test --workspace --benches -- --test

cargo test --workspace --doc

# Every test binary, and the `flotilla` binary the node's tests run, built once up front (what
# nextest's own build step would do). The operator's process tests run a copy of that node
# binary rather than building one themselves mid-run: `cargo build -p flotilla-node` unifies
# features differently from the workspace's test build, so it would compile the dependency
# tree a second time (minutes, and gigabytes of disk) while other tests run.
cargo test --workspace --no-run
cp target/debug/flotilla target/flotilla-under-test
export FLOTILLA_BIN="$PWD/target/flotilla-under-test"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# nextest's summary line is the suite's closing line: keep it last.

#!/usr/bin/env bash
# Builds the Flotilla image (both binaries) from the Dockerfile.
#
#   scripts/build-image.sh [TAG]        # default tag flotilla:dev
#
# When the base images are not present and cannot be pulled, it first makes local stand-ins
# with scripts/make-base-images.sh. The build takes a while on 2 cores (a release build of the
# whole workspace); it is not part of the default test suite. The container smoke test that
# uses the image: cargo test -p flotilla-operator --test container -- --ignored
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-flotilla:dev}"

for base in rust:1.95-bookworm debian:bookworm-slim; do
  if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull "$base" >/dev/null 2>&1; then
    echo "=== $base cannot be pulled: making local base images"
    scripts/make-base-images.sh
    break
  fi
done

# --network host: the builder fetches crates from crates.io like any cargo build.
# The classic builder (DOCKER_BUILDKIT=0) works with every Docker engine and CLI, with or
# without the buildx plugin; the Dockerfile caches dependencies in a layer of its own.
DOCKER_BUILDKIT=0 docker build --network host -t "$TAG" .
docker run --rm "$TAG" flotilla-operator --version
echo "built $TAG"

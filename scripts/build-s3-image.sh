#!/usr/bin/env bash
# Builds the S3-compatible test server's image (scripts/s3-test-server.Dockerfile: moto on
# 0.0.0.0:9000, bucket `backups`, fixed test credentials) for end-to-end tests that need an
# S3 endpoint inside Kubernetes, then checks that it serves.
#
#   scripts/build-s3-image.sh [TAG]      # default tag flotilla-s3:dev
#
# Its base is debian:bookworm-slim; where it cannot be pulled, scripts/make-base-images.sh
# first makes a local one (as scripts/build-image.sh does). The build installs python3 from
# Debian and moto from PyPI (--network host).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-flotilla-s3:dev}"

if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1 \
    && ! docker pull debian:bookworm-slim >/dev/null 2>&1; then
  echo "=== debian:bookworm-slim cannot be pulled: making local base images"
  scripts/make-base-images.sh
fi

# A small build context: the Dockerfile, the script, and the CA bundle this host trusts (pip
# in the build reaches PyPI as this host does, through whatever proxy it uses).
ctx="$(mktemp -d /tmp/flotilla-s3-image.XXXXXX)"
cleanup() { rm -rf "$ctx"; [ -n "${name:-}" ] && docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cp scripts/s3-test-server.Dockerfile scripts/s3-test-server.sh "$ctx/"
ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
if [ -s "$ca" ]; then cp "$ca" "$ctx/build-ca.crt"; else : > "$ctx/build-ca.crt"; fi
DOCKER_BUILDKIT=0 docker build --network host -f "$ctx/s3-test-server.Dockerfile" -t "$TAG" "$ctx"

# Smoke test: it answers, and the bucket exists.
name="flotilla-s3-check-$$"
docker run -d --rm --name "$name" --network host -e S3_PORT=19999 "$TAG" >/dev/null
for _ in $(seq 1 100); do
  if docker exec "$name" python3 -c \
      "import urllib.request; urllib.request.urlopen('http://127.0.0.1:19999/backups', timeout=2)" \
      >/dev/null 2>&1; then
    echo "built $TAG (moto S3 on port 9000, bucket backups)"
    exit 0
  fi
  sleep 0.3
done
docker logs "$name" >&2 || true
echo "$TAG did not serve the bucket" >&2
exit 1

#!/usr/bin/env bash
# A real S3-compatible server for the backup tests: moto's standalone server (PyPI
# `moto[server]`, pinned below), the S3 emulator boto3's own tests use. It keeps objects in
# memory (gone when it stops) and speaks S3's REST API — multipart uploads, ListObjectsV2,
# CopyObject, DeleteObject — over plain HTTP. It accepts any credentials: it does not check
# signatures, so a client signs with whatever AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY it has.
#
#   scripts/s3-test-server.sh --install                 # install only (scripts/test.sh does this)
#   scripts/s3-test-server.sh PORT [BUCKET...]          # run on 127.0.0.1:PORT, create the buckets
#
# Environment:
#   FLOTILLA_S3_VENV   where the virtualenv lives (default: <repo>/target/s3-test-server)
#   S3_HOST            address to listen on (default 127.0.0.1; the image uses 0.0.0.0)
#   S3_BUCKETS         more buckets to create, space-separated
#
# Installing needs python3 with the venv module (Debian: python3-venv) and PyPI. Running it
# replaces this shell with the server (exec), so killing the pid it was started as stops it;
# the buckets are created by a short-lived helper once the server answers.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${FLOTILLA_S3_VENV:-$REPO/target/s3-test-server}"
MOTO_VERSION="5.2.5"

install() {
  if "$VENV/bin/python" -c "import moto; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null \
      && [ -x "$VENV/bin/moto_server" ]; then
    return 0
  fi
  command -v python3 >/dev/null || { echo "s3-test-server: python3 is missing (apt-get install python3 python3-venv)" >&2; exit 3; }
  echo "s3-test-server: installing moto[server]==$MOTO_VERSION into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2 || { echo "s3-test-server: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 3; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
}

if [ "${1:-}" = "--install" ]; then
  install
  "$VENV/bin/moto_server" --help >/dev/null
  echo "s3-test-server: moto $MOTO_VERSION ready in $VENV" >&2
  exit 0
fi

PORT="${1:?usage: $0 PORT [BUCKET...] | --install}"
shift
BUCKETS="$* ${S3_BUCKETS:-}"
HOST="${S3_HOST:-127.0.0.1}"
install

# The helper waits for the server, then creates each bucket (an unsigned PUT is enough for
# moto), and exits.
"$VENV/bin/python" - "$PORT" $BUCKETS <<'EOF' &
import sys, time, urllib.request, urllib.error
port, buckets = sys.argv[1], sys.argv[2:]
base = f"http://127.0.0.1:{port}"
deadline = time.time() + 60
while True:
    try:
        urllib.request.urlopen(base + "/", timeout=2).read()
        break
    except urllib.error.HTTPError:
        break
    except Exception:
        if time.time() > deadline:
            sys.exit("s3-test-server: the server did not answer within 60 s")
        time.sleep(0.1)
for b in buckets:
    req = urllib.request.Request(f"{base}/{b}", method="PUT")
    try:
        urllib.request.urlopen(req, timeout=10).read()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # already exists
            raise
    print(f"s3-test-server: bucket {b} ready", file=sys.stderr)
EOF
exec "$VENV/bin/moto_server" -H "$HOST" -p "$PORT"

# The backup tests' S3-compatible server as an image, for end-to-end tests on Kubernetes:
# moto's standalone server (scripts/s3-test-server.sh, same pinned version) on 0.0.0.0:$S3_PORT,
# creating the buckets in $S3_BUCKETS at start. Objects live in memory: a restarted pod is empty.
#
#   scripts/build-s3-image.sh flotilla-s3:dev
#
# Ready once `GET /backups` answers 200 (the bucket exists), a second or two after start.
# Clients use the credentials in the environment below (moto accepts any signature; they are
# fixed so the test's Secret has known values), path-style addressing and plain HTTP:
#   FLOTILLA_S3_ENDPOINT=http://<service>:9000 FLOTILLA_S3_PATH_STYLE=true
#   AWS_ACCESS_KEY_ID=flotilla-test AWS_SECRET_ACCESS_KEY=flotilla-test-secret
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY s3-test-server.sh /usr/local/bin/s3-test-server.sh
# The CA bundle the build host trusts (an egress proxy's CA, on machines behind one), used by
# pip during the build only.
COPY build-ca.crt /tmp/build-ca.crt
ENV FLOTILLA_S3_VENV=/opt/moto \
    S3_HOST=0.0.0.0 \
    S3_PORT=9000 \
    S3_BUCKETS=backups \
    AWS_ACCESS_KEY_ID=flotilla-test \
    AWS_SECRET_ACCESS_KEY=flotilla-test-secret \
    HOME=/tmp
RUN if [ -s /tmp/build-ca.crt ]; then export PIP_CERT=/tmp/build-ca.crt; fi \
 && /usr/local/bin/s3-test-server.sh --install \
 && rm -f /tmp/build-ca.crt
USER 65532:65532
EXPOSE 9000
CMD ["sh", "-c", "exec /usr/local/bin/s3-test-server.sh \"$S3_PORT\""]

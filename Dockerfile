# One image with both binaries: `flotilla` (the node) and `flotilla-operator`.
#
#   docker build -t flotilla:dev .
#
# Where the public base images cannot be pulled, scripts/make-base-images.sh builds local
# images under the same two names first (scripts/build-image.sh does both).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Dependencies first, in their own layer: the manifests and stub sources build every
# dependency, so a rebuild after a source edit compiles only the workspace's own crates (the
# classic builder has no cache mounts, and BuildKit needs a buildx plugin not every host has).
COPY Cargo.toml Cargo.lock ./
COPY crates/raft/Cargo.toml crates/raft/Cargo.toml
COPY crates/proto/Cargo.toml crates/proto/Cargo.toml
COPY crates/node/Cargo.toml crates/node/Cargo.toml
COPY crates/operator/Cargo.toml crates/operator/Cargo.toml
COPY crates/sim/Cargo.toml crates/sim/Cargo.toml
RUN for c in raft proto node operator sim; do \
      mkdir -p crates/$c/src/bin crates/$c/benches && touch crates/$c/src/lib.rs; \
    done \
 && for f in node/src/main.rs operator/src/main.rs operator/src/bin/crdgen.rs \
             sim/src/main.rs proto/build.rs raft/benches/throughput.rs node/benches/log_store.rs; do \
      echo 'fn main() {}' > crates/$f; \
    done \
 && cargo build --release --locked -p flotilla-node -p flotilla-operator \
 && rm -rf crates target/release/.fingerprint/flotilla-* target/release/build/flotilla-*
COPY crates crates
COPY proto proto
# `flotilla-writer` is the end-to-end suite's write checker (tests/e2e): small, and shipping it
# lets the suite run it as a pod next to the cluster it checks.
RUN cargo build --release --locked -p flotilla-node -p flotilla-operator \
        --bin flotilla --bin flotilla-operator --bin flotilla-writer \
 && mkdir -p /out \
 && cp target/release/flotilla target/release/flotilla-operator target/release/flotilla-writer /out/

FROM debian:bookworm-slim
# A fixed non-root user (65532, as distroless uses); the StatefulSet and the operator's
# Deployment run as this uid and mount volumes with fsGroup 65532. No package manager step,
# so the runtime stage needs nothing beyond the base image.
RUN echo 'flotilla:x:65532:65532:flotilla:/var/lib/flotilla:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'flotilla:x:65532:' >> /etc/group \
 && mkdir -p /var/lib/flotilla \
 && chown 65532:65532 /var/lib/flotilla
COPY --from=builder /out/flotilla /out/flotilla-operator /out/flotilla-writer /usr/local/bin/
# CA roots for `flotilla backup` to an https:// S3 endpoint (the slim image has none); the
# builder's bundle, so the runtime stage still needs no package manager step.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /var/lib/flotilla
EXPOSE 2379 2380 9379 8080
ENTRYPOINT []
CMD ["flotilla", "--help"]

# One image with both binaries: `flotilla` (the node) and `flotilla-operator`.
#
#   docker build -t flotilla:dev .
#
# Where the public base images cannot be pulled, scripts/make-base-images.sh builds local
# images under the same two names first (scripts/build-image.sh does both).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Dependencies first, so editing the sources does not re-download the registry.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY proto proto
RUN cargo build --release --locked -p flotilla-node -p flotilla-operator \
        --bin flotilla --bin flotilla-operator \
 && mkdir -p /out \
 && cp target/release/flotilla target/release/flotilla-operator /out/

FROM debian:bookworm-slim
# A fixed non-root user (65532, as distroless uses); the StatefulSet and the operator's
# Deployment run as this uid and mount volumes with fsGroup 65532. No package manager step,
# so the runtime stage needs nothing beyond the base image.
RUN echo 'flotilla:x:65532:65532:flotilla:/var/lib/flotilla:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'flotilla:x:65532:' >> /etc/group \
 && mkdir -p /var/lib/flotilla \
 && chown 65532:65532 /var/lib/flotilla
COPY --from=builder /out/flotilla /out/flotilla-operator /usr/local/bin/
USER 65532:65532
WORKDIR /var/lib/flotilla
EXPOSE 2379 2380 9379 8080
ENTRYPOINT []
CMD ["flotilla", "--help"]

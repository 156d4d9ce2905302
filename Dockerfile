# syntax=docker/dockerfile:1
# coupa-gateway container image: a static-ish release binary on distroless (glibc, no shell).
#
#   docker build --build-arg COUPA_GATEWAY_COMMIT="$(git rev-parse --short=12 HEAD)" -t coupa-gateway:0.1.0 .
#   docker run --rm -p 127.0.0.1:8080:8080 -p 127.0.0.1:9090:9090 \
#     -v "$PWD/deploy/compose:/etc/coupa-gateway:ro" -v coupa-ledger:/var/lib/coupa-gateway \
#     coupa-gateway:0.1.0
#
# The image's own /etc/coupa-gateway/proxy.toml is the repository's proxy.toml (it targets the
# demo mock on loopback); mount a directory with your proxy.toml (and secret files) over
# /etc/coupa-gateway. A listener reachable from outside the container needs
# server.listen = "0.0.0.0:8080" and every route's callers declared (docs/configuration.md, "Who may call").

ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS build
# The context has no .git: the commit for `--version` and coupa_gateway_build_info comes in
# as a build argument (build.rs reads it).
ARG COUPA_GATEWAY_COMMIT=unknown
ENV COUPA_GATEWAY_COMMIT=${COUPA_GATEWAY_COMMIT}
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# The mock Coupa is a workspace member: the build needs its sources (the image's `mock` and
# `demo` commands run it; docker-compose.yml starts it as the stand-in Coupa).
COPY mock ./mock
# Cargo.toml declares the [[bench]] targets: cargo refuses a manifest whose target files are
# missing, even to build only the binary.
COPY benches ./benches
# The cache mounts keep the registry and incremental artefacts between builds; the binary is
# copied out of the cached target directory within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin coupa-gateway \
    && install -D -m 0755 target/release/coupa-gateway /out/coupa-gateway \
    && install -d -m 0700 /out/state

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/coupa-gateway /usr/local/bin/coupa-gateway
COPY --chown=root:root proxy.toml /etc/coupa-gateway/proxy.toml
# The migration ledger's directory (proxy.toml: path = "${STATE_DIRECTORY:-state}/…"), owned by
# the image's user; mount a volume here to keep the ledger across containers.
COPY --from=build --chown=65532:65532 /out/state /var/lib/coupa-gateway
ENV COUPA_GATEWAY_CONFIG=/etc/coupa-gateway/proxy.toml \
    STATE_DIRECTORY=/var/lib/coupa-gateway \
    RUST_LOG=info
# 8080: the proxy; 9090: /healthz /readyz /metrics /status and the status page (keep private).
EXPOSE 8080 9090
USER 65532:65532
# distroless has no curl: the binary checks its own admin listener (admin.listen from the
# config, 0.0.0.0 reached on loopback). Kubernetes ignores HEALTHCHECK and uses its probes.
HEALTHCHECK --interval=30s --timeout=6s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/coupa-gateway", "health"]
ENTRYPOINT ["/usr/local/bin/coupa-gateway"]
CMD ["serve"]

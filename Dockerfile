# syntax=docker/dockerfile:1
#
# sse-gateway container image.
#
# Build (BuildKit, the default builder of current Docker releases); the revision is
# what `sse-gateway --version` and sse_build_info report (.git is not in the context):
#   docker build --build-arg SSE_GATEWAY_REVISION="$(git rev-parse --short=12 HEAD)" -t sse-gateway .
#
# Run (production defaults: no demo page, no sample publisher; add
# -e SSE_GATEWAY_DEMO__ENABLED=true -e SSE_GATEWAY_DEMO__PUBLISHER=true to try them):
#   docker run --rm -p 8080:8080 \
#     -e SSE_GATEWAY_AUTH__HS256_SECRET="$(openssl rand -hex 32)" \
#     sse-gateway
#
# With Redis, Prometheus and Grafana (dashboard provisioned): docker-compose.yml.
#
# Mint a token with the running container's key (same config, env and working dir):
#   docker exec <container> sse-gateway token --subscribe 'orders.*' --publish 'orders.*'
#
# Configuration: /etc/sse-gateway/config.toml (the repository's config.toml, every key
# shown with its default). Any key can be overridden with an environment variable
# SSE_GATEWAY_<SECTION>__<KEY> (two underscores between section and key), e.g.
#   SSE_GATEWAY_SERVER__ADDR=0.0.0.0:8080          (set below; the file says 127.0.0.1)
#   SSE_GATEWAY_AUTH__HS256_SECRET=...             (32+ random bytes recommended)
#   SSE_GATEWAY_AUTH__HS256_SECRET_FILE=/run/secrets/sse-gateway-hs256
#   SSE_GATEWAY_AUTH__ALGORITHMS='["HS256","RS256"]'
#   SSE_GATEWAY_LIMITS__MAX_CONNECTIONS=50000
#   SSE_GATEWAY_METRICS__ADDR=0.0.0.0:9090         (separate /metrics listener)
#   SSE_GATEWAY_LOG__FORMAT=json
# To use another file, mount it and set SSE_GATEWAY_CONFIG=/path/to/config.toml.
#
# With no HS256 secret configured, `serve` generates one into
# /var/lib/sse-gateway/.sse-gateway-secret (the working directory). That file lives
# only as long as the container unless a volume is mounted there, and every replica
# would get its own: set SSE_GATEWAY_AUTH__HS256_SECRET(_FILE) in production.
#
# Shutdown: SIGTERM ends the event streams at once and gives in-flight requests
# server.shutdown_grace (10s by default) to finish; raise `docker stop -t` /
# terminationGracePeriodSeconds above that grace if you raise it.

############################
# Builder
############################
FROM rust:1-bookworm AS builder

WORKDIR /build
ARG SSE_GATEWAY_REVISION=unknown
ENV SSE_GATEWAY_REVISION=${SSE_GATEWAY_REVISION}

# The whole crate (Cargo.toml names its tests and benches, so they must be present
# for the manifest to load). The cargo registry and target dir are BuildKit cache
# mounts, so rebuilds reuse compiled dependencies; the binary is copied out of the
# cache mount inside the same step.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin sse-gateway \
    && cp target/release/sse-gateway /usr/local/bin/sse-gateway

############################
# Runtime
############################
FROM debian:bookworm-slim

# ca-certificates only (for TLS to external services such as a future Redis backend).
# Versions are left to the bookworm security updates rather than pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Unprivileged user; its home is the working directory, where the gateway may
# write the generated .sse-gateway-secret.
RUN groupadd --system --gid 10001 sse-gateway \
    && useradd --system --uid 10001 --gid 10001 \
        --home-dir /var/lib/sse-gateway --no-create-home \
        --shell /usr/sbin/nologin sse-gateway \
    && install -d -m 0750 -o 10001 -g 10001 /var/lib/sse-gateway

COPY --from=builder /usr/local/bin/sse-gateway /usr/local/bin/sse-gateway
COPY config.toml /etc/sse-gateway/config.toml

# The repository's config.toml with the production defaults the image runs: the
# demo page and its sample publisher stay off unless asked for.
ENV SSE_GATEWAY_SERVER__ADDR=0.0.0.0:8080 \
    SSE_GATEWAY_CONFIG=/etc/sse-gateway/config.toml \
    SSE_GATEWAY_DEMO__ENABLED=false \
    SSE_GATEWAY_DEMO__PUBLISHER=false

WORKDIR /var/lib/sse-gateway
USER 10001:10001

EXPOSE 8080

# No curl in the slim image: bash's /dev/tcp sends a plain HTTP/1.0 GET /healthz and
# the check passes when the status line says 200. The port follows
# SSE_GATEWAY_SERVER__ADDR (8080 when unset); the listener must accept connections
# on 127.0.0.1 (0.0.0.0 or [::] do).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "port=\"${SSE_GATEWAY_SERVER__ADDR##*:}\"; exec 3<>\"/dev/tcp/127.0.0.1/${port:-8080}\" && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/local/bin/sse-gateway"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# turbo-server (and turbo-node) in a slim Debian image, running as a non-root user.
#
#   docker build -t turbo .
#   docker run --rm -p 1080:1080 -p 8080:8080 -p 8443:8443/udp -p 127.0.0.1:9090:9090 \
#       -v turbo-data:/var/lib/turbo turbo
#
# compose.yaml runs it with Redis and PostgreSQL (README: "Self-host with compose").
# Docker's default seccomp profile refuses io_uring, so there the data plane runs on
# epoll (driver = "auto" falls back; the log says driver="legacy").

# --- build: the toolchain the project is built and tested with (Rust 1.95, Debian 12).
FROM rust:1.95-slim-bookworm AS build
# BoringSSL (quiche's `boring` crate) needs cmake and clang; git stamps --version.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang libclang-dev pkg-config git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin turbo-server --bin turbo-node \
 && install -m 0755 target/release/turbo-server target/release/turbo-node /usr/local/bin/

# --- run: the binaries, the packaged config and curl for the health check.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/turbo \
        --shell /usr/sbin/nologin turbo \
 && install -d -m 0700 -o turbo -g turbo /var/lib/turbo
COPY --from=build /usr/local/bin/turbo-server /usr/local/bin/turbo-node /usr/bin/
COPY packaging/etc/server.toml /etc/turbo/server.toml
USER turbo
WORKDIR /var/lib/turbo
VOLUME /var/lib/turbo
# The API (dashboard, /healthz, /metrics) must listen beyond the container's
# loopback to be published; publish it on the host's loopback or behind TLS.
ENV TURBO_API_LISTEN=0.0.0.0:9090
EXPOSE 1080/tcp 8080/tcp 8443/udp 9090/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
# SIGTERM drains (shutdown_grace, 30s by default): give `docker stop` a longer -t.
STOPSIGNAL SIGTERM
ENTRYPOINT ["turbo-server"]
CMD ["run", "--config", "/etc/turbo/server.toml"]

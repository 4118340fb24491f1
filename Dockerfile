# syntax=docker/dockerfile:1
#
# Portcullis in a container: built with the Rust toolchain, run on Debian slim as an
# unprivileged user. Not exercised by CI (no Docker engine there); see README "Deploying".
#
#   docker build -t portcullis .
#   docker run -p 8080:8080 -p 127.0.0.1:9100:9100 portcullis
#
# The image's default config (deploy/container.toml) runs on the embedded backends with its
# data in /var/lib/portcullis. Mount your own /etc/portcullis (portcullis.toml) or override
# any key with PORTCULLIS_<SECTION>__<KEY>; docker-compose.yml shows PostgreSQL, Redis and SMTP.

FROM rust:1-bookworm AS build
# Pingora builds zlib-ng with cmake, even with rustls.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches keep downloaded crates and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portcullis \
    && install -m 0755 target/release/portcullis /usr/local/bin/portcullis

FROM debian:bookworm-slim
# ca-certificates: smtps:// relays, rediss:// and https:// upstreams. libssl3: passkey
# (WebAuthn) signatures are verified with OpenSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 portcullis \
    && useradd --system --uid 10001 --gid portcullis --no-create-home \
        --home-dir /var/lib/portcullis --shell /usr/sbin/nologin portcullis \
    && mkdir -p /etc/portcullis /var/lib/portcullis /var/log/portcullis \
    && chown portcullis:portcullis /var/lib/portcullis /var/log/portcullis \
    && chmod 0750 /var/lib/portcullis /var/log/portcullis
COPY --from=build /usr/local/bin/portcullis /usr/local/bin/portcullis
COPY deploy/container.toml /etc/portcullis/portcullis.toml
COPY config/production.example.toml /etc/portcullis/production.example.toml

ENV PORTCULLIS_CONFIG=/etc/portcullis/portcullis.toml
WORKDIR /var/lib/portcullis
USER portcullis:portcullis
# 8080: the gateway. 9100: /metrics and /health; publish it only to a private network.
EXPOSE 8080 9100
# Signing key, TOTP key, SQLite file and outbox live in /var/lib/portcullis: keep and back it up.
VOLUME ["/etc/portcullis", "/var/lib/portcullis", "/var/log/portcullis"]

# `portcullis health` asks server.admin_listen, as the config in use names it, for /health.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/portcullis", "health"]

# SIGTERM (docker stop) drains in-flight requests for server.shutdown_grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]

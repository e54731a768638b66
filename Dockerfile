# The invited daemon. Build: docker build -t invited .  (docker-compose.yml builds it too)
# Stage 1 compiles a release binary; stage 2 is a slim Debian of the same release
# (bookworm, so the binary's glibc matches) that runs it as an unprivileged user.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin invited

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/invited --create-home invited
COPY --from=builder /src/target/release/invited /usr/local/bin/invited
COPY config/compose.toml /etc/invited/invited.toml
ENV INVITED_CONFIG=/etc/invited/invited.toml
USER invited
WORKDIR /var/lib/invited
# SMTP intake, HTTP (/healthz, recorder API)
EXPOSE 2525 8080
ENTRYPOINT ["invited"]
CMD ["serve"]

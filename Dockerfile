# runrate: build with the official Rust image, run on slim Debian as a non-root user.

FROM rust:1.95-slim-bookworm AS build
# The commit built, for runrate_build_info (the context has no .git):
#   docker build --build-arg RUNRATE_REVISION="$(git rev-parse --short=12 HEAD)" .
ARG RUNRATE_REVISION=unknown
WORKDIR /src
# Dependencies first, so that code changes do not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin runrate
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin runrate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/runrate runrate
COPY --from=build /src/target/release/runrate /usr/local/bin/runrate
# By number: a runtime that cannot read /etc/passwd (Kubernetes' runAsNonRoot) still
# knows it is not root.
USER 10001:10001
WORKDIR /var/lib/runrate
ENV RUNRATE__DATA_DIR=/var/lib/runrate/data \
    RUNRATE__GRPC__LISTEN=0.0.0.0:50051 \
    RUNRATE__HTTP__LISTEN=0.0.0.0:8080
# Prometheus metrics, when RUNRATE__METRICS__LISTEN=0.0.0.0:9464 turns them on.
EXPOSE 50051 8080 9464
# SERVING over gRPC health, or unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["runrate", "health", "--server", "http://127.0.0.1:50051"]
ENTRYPOINT ["runrate"]
CMD ["serve"]

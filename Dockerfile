# syntax=docker/dockerfile:1
# gridroute container image: a locked release build, then a small non-root runtime image.
#
#   docker build -t gridroute:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9464:9464 -e GRIDROUTE_REDIS_URL=redis://redis:6379/ gridroute:0.1.0
#
# The runtime image holds only the binary (the Dawukou sample and the 2024-2026 calendar are
# embedded in it); mount routing tables at /etc/gridroute/tables and set GRIDROUTE_TABLES.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit caches keep the registry and the target directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gridroute \
 && install -m 0755 target/release/gridroute /usr/local/bin/gridroute

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/gridroute /usr/local/bin/gridroute
# 65532 is distroless's nonroot user; the root filesystem can be read-only: gridroute writes
# nothing but its logs (stdout/stderr).
USER 65532:65532
EXPOSE 50051 8080 9464
ENV GRIDROUTE_GRPC_ADDR=0.0.0.0:50051 \
    GRIDROUTE_HTTP_ADDR=0.0.0.0:8080 \
    GRIDROUTE_METRICS_ADDR=0.0.0.0:9464 \
    GRIDROUTE_LOG_FORMAT=json
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/gridroute", "health", "--addr", "http://127.0.0.1:50051"]
ENTRYPOINT ["/usr/local/bin/gridroute"]
CMD ["serve"]

# The Ludus node image: `ludus serve` as a non-root user, with the example games built in
# (/usr/share/ludus/games). Build from the repository's root:
#   docker build -t ludus .
# Kubernetes manifests that run it: deploy/kubernetes/ (README: "Running on Kubernetes").

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
# The whole workspace, as the tests build it (building one package alone can build
# wasmtime with other features), then the example games for wasm32-wasip2.
RUN cargo build --release --locked --workspace \
    && target/release/ludus build \
    && mkdir -p /out/games \
    && cp target/release/ludus /out/ludus \
    && cp example-games/target/wasm32-wasip2/release/*.wasm /out/games/

# glibc and libgcc only: the binary needs nothing else (TLS is rustls).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ludus /usr/local/bin/ludus
COPY --from=build /out/games /usr/share/ludus/games
WORKDIR /home/nonroot
# 7350: players (HTTP and WebSocket); 7351: admin (health, readiness, metrics);
# 7360: node-to-node gRPC in a cluster.
EXPOSE 7350 7351 7360
ENV LUDUS_LISTEN=0.0.0.0:7350 \
    LUDUS_ADMIN__LISTEN=0.0.0.0:7351 \
    LUDUS_DATA_DIR=/home/nonroot/ludus-data
# The image's `nonroot` user.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ludus", "serve"]

# etcdplan in a container: built on Debian bookworm with the packages the
# README names (protoc for etcd-client's gRPC code), run from a distroless
# image that has CA certificates (for `tls` sections without `ca`), no shell,
# and runs as a non-root user.
#
#   docker build -t etcdplan:0.1.0 .
#   docker run --rm etcdplan:0.1.0 --help

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler=3.21.* libprotobuf-dev=3.21.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin etcdplan \
 && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin etcdplan \
 && strip target/release/etcdplan

# glibc, libgcc and CA certificates; no shell; user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/etcdplan /usr/local/bin/etcdplan
USER 65532:65532
WORKDIR /work
ENTRYPOINT ["/usr/local/bin/etcdplan"]
CMD ["--help"]

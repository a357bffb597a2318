# The `kiln` server in a small image. Same build as the README's:
# `cargo build --release --bin kiln` on Rust 1.95.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kiln

FROM debian:bookworm-slim
# The system's CA roots: identity providers are reached over https.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --create-home --home-dir /var/lib/kiln kiln
COPY --from=build /src/target/release/kiln /usr/local/bin/kiln
USER kiln
# Apps, components, the compile cache and a generated admin key live here:
# mount a volume to keep them. Set KILN_ADMIN_KEY to choose the key.
ENV KILN_DATA_DIR=/var/lib/kiln \
    KILN_LISTEN=0.0.0.0:8080
VOLUME /var/lib/kiln
EXPOSE 8080
ENTRYPOINT ["kiln"]
CMD ["serve"]

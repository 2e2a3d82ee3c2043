# Build: docker build -t sipfarm .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/target/release/sipfarm /usr/local/bin/sipfarm
COPY config/sipfarm.toml /etc/sipfarm/sipfarm.toml
EXPOSE 5060/udp 5060/tcp
ENTRYPOINT ["/usr/local/bin/sipfarm"]
CMD ["serve", "--listen", "udp:0.0.0.0:5060", "--listen", "tcp:0.0.0.0:5060"]

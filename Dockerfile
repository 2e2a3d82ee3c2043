# sipfarm's images. `docker build -t sipfarm .` builds the runtime (the last stage); the
# farm's DNS server is the `dns` target (docker-compose.yml builds both).
#
# Runtime: a small Debian with the one binary, run as an unprivileged user. Configuration by
# file (mount one and set SIPFARM_CONFIG=/path, or pass --config) and by environment: every
# flag of `sipfarm serve` is also SIPFARM_<FLAG> (SIPFARM_MEMCACHED, SIPFARM_LISTEN, ...;
# lists comma-separated), a flag given wins.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/sipfarm

# The farm's DNS server (NAPTR, SRV and A records given on its command line).
FROM debian:bookworm-slim AS dns
RUN apt-get update \
    && apt-get install -y --no-install-recommends dnsmasq-base \
    && rm -rf /var/lib/apt/lists/*
EXPOSE 53/udp 53/tcp
ENTRYPOINT ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", \
            "--no-hosts", "--log-facility=-", "--user=nobody"]

FROM debian:bookworm-slim AS runtime
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sipfarm
COPY --from=build /src/target/release/sipfarm /usr/local/bin/sipfarm
# An example to start from (not read unless named): see config/sipfarm.toml.
COPY config/sipfarm.toml /etc/sipfarm/sipfarm.toml
USER sipfarm
# Every address of the container, SIP's port (above 1023: no privilege needed).
ENV SIPFARM_LISTEN=udp:0.0.0.0:5060,tcp:0.0.0.0:5060
EXPOSE 5060/udp 5060/tcp
ENTRYPOINT ["/usr/local/bin/sipfarm"]
CMD ["serve"]

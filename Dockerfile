# sipfarm's images. `docker build -t sipfarm .` builds the runtime (the last stage); the
# farm's DNS server is the `dns` target (docker-compose.yml builds both).
#
# Runtime: a small Debian with the one binary, run as an unprivileged user. Configuration by
# file (SIPFARM_CONFIG names it: /etc/sipfarm/container.toml by default; mount yours and set
# it) and by environment: every flag of `sipfarm serve` is also SIPFARM_<FLAG>
# (SIPFARM_MEMCACHED, SIPFARM_DOMAIN, ...; lists comma-separated), over the file's keys.

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
# The default configuration: every address of the container, SIP's port (above 1023: no
# privilege needed). A file of your own replaces it whole: mount it and point SIPFARM_CONFIG
# at it (an environment variable for listen would override the file's listen addresses).
RUN printf '[server]\nlisten = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]\n' \
    > /etc/sipfarm/container.toml
ENV SIPFARM_CONFIG=/etc/sipfarm/container.toml
USER sipfarm
EXPOSE 5060/udp 5060/tcp
ENTRYPOINT ["/usr/local/bin/sipfarm"]
CMD ["serve"]

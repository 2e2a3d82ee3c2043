//! Transports: RFC 3261 section 18 (UDP: a datagram is a message; TCP: framing by
//! Content-Length, 18.3), RFC 5626 3.5.1 (CRLF keep-alive ping and pong).
//!
//! The transport layer moves bytes and knows nothing of SIP beyond framing: each framed
//! message is handed to a [`Handler`] with its [`Peer`], the way to answer it.

pub(crate) mod admission;
pub(crate) mod bind;
mod conn;
pub(crate) mod stun;
pub(crate) mod tcp;
pub(crate) mod udp;

#[cfg(test)]
mod tests;

use crate::sip::ParseError;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;

pub(crate) use conn::{Conn, Connections};

/// Transport of a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }

    /// As written in a Via (upper case).
    pub(crate) fn via(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        }
    }
}

/// One `udp:HOST:PORT` / `tcp:HOST:PORT` listen address, and what we call it where others
/// must reach it (`advertise`, like Kamailio's `listen=... advertise ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub proto: Proto,
    pub addr: SocketAddr,
    /// The address written in our Via and Record-Route instead of the socket's (a NAT in
    /// front, or a socket on 0.0.0.0), and counted as us.
    pub advertise: Option<Advertise>,
}

/// An advertised `HOST[:PORT]`: HOST an IP address or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    /// Lower case, IPv6 without brackets.
    pub host: String,
    /// None: the socket's own port.
    pub port: Option<u16>,
}

impl Advertise {
    /// `203.0.113.5`, `203.0.113.5:5060`, `[2001:db8::5]:5060`, `2001:db8::5`, `sip.example.com:5060`.
    pub(crate) fn parse(s: &str) -> Result<Advertise, String> {
        let bad = || format!("'{s}' is not HOST[:PORT] (IPv6 as [2001:db8::1]:5060)");
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        let (host, port) = if let Some(v6) = s.strip_prefix('[') {
            let (host, rest) = v6.split_once(']').ok_or_else(bad)?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            match rest.strip_prefix(':') {
                Some(p) => (host, Some(port(p)?)),
                None if rest.is_empty() => (host, None),
                None => return Err(bad()),
            }
        } else if s.parse::<std::net::IpAddr>().is_ok() {
            (s, None)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(port(p)?)),
                None => (s, None),
            }
        };
        let name_ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
        if host.is_empty() || !name_ok {
            return Err(bad());
        }
        Ok(Advertise {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for Advertise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.host.contains(':'), self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (true, None) => write!(f, "[{}]", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (false, None) => f.write_str(&self.host),
        }
    }
}

impl Listen {
    /// `udp:127.0.0.1:5080`, `tcp:[::1]:5060`, `udp:0.0.0.0:5060 advertise 203.0.113.5:5060`.
    pub(crate) fn parse(s: &str) -> Result<Listen, String> {
        let mut words = s.split_whitespace();
        let socket = words.next().unwrap_or_default();
        let (proto, rest) = socket
            .split_once(':')
            .ok_or_else(|| format!("'{s}': expected udp:HOST:PORT or tcp:HOST:PORT"))?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp,
            other => return Err(format!("'{s}': unknown transport '{other}' (udp or tcp)")),
        };
        let addr: SocketAddr = rest
            .parse()
            .map_err(|_| format!("'{s}': '{rest}' is not an IP:PORT (IPv6 as [::1]:5060)"))?;
        let advertise = match (words.next(), words.next(), words.next()) {
            (None, _, _) => None,
            (Some(w), Some(a), None) if w.eq_ignore_ascii_case("advertise") => {
                Some(Advertise::parse(a).map_err(|e| format!("'{s}': advertise {e}"))?)
            }
            _ => {
                return Err(format!(
                    "'{s}': expected PROTO:HOST:PORT [advertise HOST[:PORT]]"
                ));
            }
        };
        Ok(Listen {
            proto,
            addr,
            advertise,
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.proto.as_str(), self.addr)?;
        match &self.advertise {
            Some(a) => write!(f, " advertise {a}"),
            None => Ok(()),
        }
    }
}

/// What `[limits]` configures: the bounds that keep one source, or a flood, from stopping
/// or exhausting an instance. Every figure has a safe default (README, "Security").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// TCP connections open at once, accepted and dialled.
    pub max_connections: usize,
    /// TCP connections open at once from one source address.
    pub max_connections_per_source: usize,
    /// Time a message may take to arrive once its first byte has (slow-loris).
    pub partial_message_timeout: std::time::Duration,
    /// Time a TCP write may stay blocked (a peer that never reads) before the connection
    /// is closed.
    pub tcp_write_timeout: std::time::Duration,
    /// Bytes queued for one TCP connection; past it the connection is closed (a peer that
    /// does not read).
    pub tcp_queue_bytes: usize,
    /// Requests being handled at once by one instance; past it, 503 with Retry-After.
    pub max_in_flight: usize,
    /// Datagrams per second accepted from one source address (a burst of twice as many);
    /// past it, dropped before they are read (like Kamailio's pike).
    pub source_rate: u32,
    /// Requests of one source address handled at once; past it, its datagrams are dropped
    /// before they are read (a flooder cannot queue ahead of everyone else).
    pub max_in_flight_per_source: usize,
    /// Outbound TCP connects under way at once.
    pub max_dials: usize,
    /// DNS lookups under way at once.
    pub max_dns_lookups: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            max_connections_per_source: 64,
            partial_message_timeout: std::time::Duration::from_secs(10),
            tcp_write_timeout: std::time::Duration::from_secs(10),
            tcp_queue_bytes: 1 << 20,
            max_in_flight: 4096,
            source_rate: 5000,
            max_in_flight_per_source: 128,
            max_dials: 256,
            max_dns_lookups: 64,
        }
    }
}

/// How to answer a message on the path it came in on (not RFC 3327 Path): the UDP socket
/// it arrived at, or its TCP connection.
#[derive(Clone, Debug)]
pub(crate) enum ReplyPath {
    Udp(Arc<UdpSocket>),
    Tcp(Conn),
}

#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub proto: Proto,
    pub src: SocketAddr,
    pub path: ReplyPath,
}

/// What handles each framed message. Implemented by the server: the transport moves bytes
/// and never builds SIP answers itself.
pub(crate) trait Handler: Send + Sync + 'static {
    /// `data` is one datagram (UDP) or one framed message (TCP).
    fn on_message(
        self: Arc<Self>,
        data: Bytes,
        peer: Peer,
    ) -> impl std::future::Future<Output = ()> + Send;

    /// A stream whose framing broke (`err`); `data` is what was buffered. The handler may
    /// answer on `peer` before this returns; the connection is closed after it, since the
    /// stream cannot be resynchronised.
    fn on_unframed(
        self: Arc<Self>,
        data: Bytes,
        peer: Peer,
        err: ParseError,
    ) -> impl std::future::Future<Output = ()> + Send;

    /// The TCP connection with `remote` closed (RFC 5626 5.3: a flow is gone).
    fn on_closed(
        self: Arc<Self>,
        remote: SocketAddr,
    ) -> impl std::future::Future<Output = ()> + Send {
        let _ = remote;
        async {}
    }
}

/// Send bytes back along a path: over UDP to `dest`, over TCP on the connection (queued,
/// never waited on: see [`Conn::send`]).
pub(crate) async fn send(path: &ReplyPath, dest: SocketAddr, bytes: Bytes) {
    match path {
        ReplyPath::Udp(sock) => {
            if let Err(e) = sock.send_to(&bytes, dest).await {
                tracing::debug!(%dest, error = %e, "udp send failed");
            }
        }
        ReplyPath::Tcp(conn) => {
            if !conn.send(bytes) {
                tracing::debug!(%dest, "tcp connection closed or blocked before the answer");
            }
        }
    }
}

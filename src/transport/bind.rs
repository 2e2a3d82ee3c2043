//! Binding the listen sockets of one event loop. Several loops share each address through
//! SO_REUSEPORT (the kernel spreads datagrams and connections over them); a first probe
//! without it makes sure no other process already holds the port, so that a second
//! `sipfarm serve` on the same address fails at start instead of silently sharing it.

use super::{Listen, Proto};
use std::net::SocketAddr;
use std::sync::Arc;

/// The bound sockets of one runtime.
pub(crate) struct Sockets {
    pub udp: Vec<Arc<tokio::net::UdpSocket>>,
    pub tcp: Vec<tokio::net::TcpListener>,
    /// The addresses actually bound (port 0 resolved).
    pub bound: Vec<Listen>,
}

fn reuse_udp(addr: SocketAddr, reuse: bool) -> std::io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if reuse {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Bind every listen address. With `reuse` (several runtimes), sockets share the address by
/// SO_REUSEPORT; a first probe without it makes sure no other process holds the port.
pub(crate) async fn bind_sockets(listen: &[Listen], reuse: bool) -> Result<Sockets, String> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    let mut bound = Vec::new();
    for l in listen {
        match l.proto {
            Proto::Udp => {
                if reuse && l.addr.port() != 0 && crate::clock::runtime_index() == 0 {
                    std::net::UdpSocket::bind(l.addr)
                        .map_err(|e| format!("--listen {l}: cannot bind: {e}"))?;
                }
                let std_sock = reuse_udp(l.addr, reuse)
                    .map_err(|e| format!("--listen {l}: cannot bind: {e}"))?;
                let s = tokio::net::UdpSocket::from_std(std_sock)
                    .map_err(|e| format!("--listen {l}: {e}"))?;
                let addr = s.local_addr().unwrap_or(l.addr);
                bound.push(Listen {
                    proto: Proto::Udp,
                    addr,
                    advertise: l.advertise.clone(),
                });
                udp.push(Arc::new(s));
            }
            Proto::Tcp => {
                if reuse && l.addr.port() != 0 && crate::clock::runtime_index() == 0 {
                    std::net::TcpListener::bind(l.addr)
                        .map_err(|e| format!("--listen {l}: cannot bind: {e}"))?;
                }
                let sock = if l.addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                }
                .map_err(|e| format!("--listen {l}: {e}"))?;
                let _ = sock.set_reuseaddr(true);
                if reuse {
                    sock.set_reuseport(true)
                        .map_err(|e| format!("--listen {l}: {e}"))?;
                }
                sock.bind(l.addr)
                    .map_err(|e| format!("--listen {l}: cannot bind: {e}"))?;
                let listener = sock
                    .listen(1024)
                    .map_err(|e| format!("--listen {l}: cannot listen: {e}"))?;
                let addr = listener.local_addr().unwrap_or(l.addr);
                bound.push(Listen {
                    proto: Proto::Tcp,
                    addr,
                    advertise: l.advertise.clone(),
                });
                tcp.push(listener);
            }
        }
    }
    Ok(Sockets { udp, tcp, bound })
}

/// Every address of this host's interfaces (getifaddrs(3)): with a socket on 0.0.0.0 or
/// [::], a request to any of them reached us. Empty when the call fails.
pub(crate) fn host_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read, then free once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed; the
        // family tells which sockaddr type `ifa_addr` points to.
        unsafe {
            let a = (*cur).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(a as *const libc::sockaddr_in);
                        out.push(std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)).into());
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(a as *const libc::sockaddr_in6);
                        out.push(std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr).into());
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
    }
    // SAFETY: the list from the successful getifaddrs above, freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    out
}

/// The address this host would send from toward the rest of the world (the primary
/// address, for our Via when listening on 0.0.0.0 without `advertise`): the source the
/// kernel picks for a UDP socket "connected" to a documentation address. No packet is sent.
pub(crate) fn primary_address(v6: bool) -> Option<std::net::IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if v6 {
        (
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            ("2001:db8::1".parse::<std::net::Ipv6Addr>().ok()?, 9).into(),
        )
    } else {
        (
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            ([192, 0, 2, 1], 9).into(),
        )
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(probe).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

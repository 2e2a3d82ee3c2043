//! The registrar: the SIP rules of the location service, apart from its storage (as
//! Kamailio keeps save.c and lookup.c in its registrar module, and storage in usrloc).
//!
//! - [`save`]: a REGISTER becomes a change of the AOR's record (RFC 3261 10.3, RFC 3327 Path,
//!   RFC 5626 instance-id/reg-id), applied through the [`crate::location`] store.
//! - [`lookup`]: a request for one of our users becomes a target (RFC 3261 16.5: no record
//!   404, no live binding 480, the binding a stateless proxy must choose, Path as the route
//!   set, the TCP connection the binding was registered over).
//!
//! - [`flow`]: which flow reaches a UA (RFC 5626 outbound, TCP, NAT) and which instance holds
//!   it.
//!
//! Both decide and return values (a reply, a target, or a [`Refusal`](crate::sip::response::Refusal));
//! the server sends.

pub(crate) mod flow;
pub(crate) mod lookup;
pub(crate) mod save;
#[cfg(test)]
mod tests;

pub(crate) use lookup::{Target, lookup};
pub(crate) use save::save;

/// What `[registrar]` configures.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrarConfig {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
}

/// An answer over UDP to a request nobody authenticated must not be much larger than the
/// request (a reflector's amplification): past `limit` bytes, Contact lines are dropped from
/// the end and a Warning says so (RFC 3261 20.43); a UA that needs every binding asks over
/// TCP or authenticates. Our own 200 OK, so its lines are known: one header per line.
pub(crate) fn cap_answer(bytes: Vec<u8>, limit: usize) -> Vec<u8> {
    if bytes.len() <= limit {
        return bytes;
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return bytes;
    };
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return bytes;
    };
    let warning = "Warning: 399 sipfarm \"bindings list cut: ask over TCP or authenticated\"\r\n";
    let mut out = String::with_capacity(limit);
    let mut contacts: Vec<&str> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with("Contact:") {
            contacts.push(line);
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(warning);
    let fixed = out.len() + 2 + body.len();
    let mut room = limit.saturating_sub(fixed);
    for c in contacts {
        if c.len() + 2 > room {
            break;
        }
        room -= c.len() + 2;
        out.push_str(c);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

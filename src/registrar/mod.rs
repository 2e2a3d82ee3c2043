//! The registrar: the SIP rules of the location service, apart from its storage (as
//! Kamailio keeps save.c and lookup.c in its registrar module, and storage in usrloc).
//!
//! - [`save`]: a REGISTER becomes a change of the AOR's record (RFC 3261 10.3, RFC 3327 Path,
//!   RFC 5626 instance-id/reg-id), applied through the [`crate::location`] store.
//! - [`lookup`]: a request for one of our users becomes a target (RFC 3261 16.5: no record
//!   404, no live binding 480, the binding a stateless proxy must choose, Path as the route
//!   set, the TCP connection the binding was registered over).
//!
//! Both decide and return values (a reply, a target, or a [`Refusal`](crate::sip::response::Refusal));
//! the server sends.

pub(crate) mod lookup;
pub(crate) mod save;
#[cfg(test)]
mod tests;

pub(crate) use lookup::lookup;
pub(crate) use save::save;

/// What `[registrar]` configures.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
}

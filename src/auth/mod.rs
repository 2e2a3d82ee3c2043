//! Authentication of requests for our domains: RFC 3261 22 (the 401/407 challenge and the
//! `Authorization` / `Proxy-Authorization` answer), RFC 7616 (HTTP Digest, qop=auth) and
//! RFC 8760 (SHA-256 in SIP, MD5 still offered for older phones).
//!
//! Why a module of its own: every instance of the farm must accept what any other instance
//! issued, so the nonces are stateless and the users file is the same everywhere; only the
//! failure counts are per instance (a guesser spread over n instances gets n allowances):
//! - `digest`: parse credentials, compute and compare responses, write challenges;
//! - `nonce`: stateless nonces (time, random, HMAC under a secret shared by the farm, with
//!   the previous secret accepted during a rotation);
//! - `users`: the users file of HA1 values (never passwords), read at start, edited
//!   atomically by the command line;
//! - `limit`: failed attempts per source address and per user, to slow brute force without
//!   locking out a phone retrying with a mistyped password.
//!
//! Items are reached through their submodule (`auth::digest::parse`, `auth::users::Users`):
//! re-exports are added here when the server starts using them (an unused `pub(crate) use`
//! is a warning that `#[allow(dead_code)]` does not cover).
//!
//! The replay check (the highest nonce-count seen per nonce, keyed by `nonce::nonce_id`) is
//! stored in memcached by the caller.

pub(crate) mod digest;
pub(crate) mod limit;
pub(crate) mod nonce;
pub(crate) mod users;

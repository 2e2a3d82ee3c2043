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
//! - `policy`: the gate every request passes: who is challenged, who may register which
//!   address, who may relay where.
//!
//! The replay check (the highest nonce-count seen per nonce, keyed by `nonce::nonce_id`) is
//! kept in the location store, so that a replay to another instance is refused too.

pub(crate) mod digest;
pub(crate) mod limit;
pub(crate) mod nonce;
pub(crate) mod policy;
pub(crate) mod users;

pub(crate) use policy::Auth;
pub use policy::AuthConfig;

/// `sipfarm user add`: store the HA1s of `aor` (user@domain) for `password` in the users
/// file, replacing the user's line if there is one.
pub fn add_user(users_file: &std::path::Path, aor: &str, password: &str) -> Result<(), String> {
    users::add(users_file, aor, password)
}

/// `sipfarm user rm`: remove `aor` from the users file; false when it was not there.
pub fn remove_user(users_file: &std::path::Path, aor: &str) -> Result<bool, String> {
    users::remove(users_file, aor)
}

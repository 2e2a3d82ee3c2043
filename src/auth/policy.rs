//! Who may do what: the gate every request passes when authentication is on.
//!
//! RFC 3261 22.1 (ACK and CANCEL are never challenged), 22.2 / 22.3 (401 with
//! WWW-Authenticate from a registrar, 407 with Proxy-Authenticate from a proxy), 26.1
//! (registration hijacking, open relays), RFC 7616 3.3 / 3.4 (stale nonces, nonce-count
//! against replay), RFC 8760 (one challenge per algorithm, in the configured order).
//!
//! The rules, in order:
//! 1. a trusted peer (a gateway, a carrier: configured networks) passes unchallenged;
//! 2. a source blocked after too many failed attempts gets 403;
//! 3. REGISTER for one of our domains needs credentials for realm = the To domain, and the
//!    authenticated user may register only its own AOR (403 otherwise);
//! 4. other requests we answer ourselves (OPTIONS to the instance) pass;
//! 5. in-dialog requests (a To tag and a Route naming the farm) pass, and so do ACK and
//!    CANCEL, except that neither may be relayed from a foreign user to a foreign domain;
//! 6. a request whose From is in one of our domains needs credentials for realm = the From
//!    domain, as the From user (407, then 403 for another user's credentials);
//! 7. a foreign user may reach our users (inbound calls) and nothing else (403: no relay).

pub use super::digest::Algorithm;
use super::digest::{self, Credentials};
use super::limit::FailureLimiter;
use super::nonce::{NonceKeys, NonceState, nonce_id};
use super::users::Users;
use crate::clock::now_millis;
use crate::identity::Identity;
use crate::location::Store;
use crate::sip::Message;
use crate::sip::addr::{NameAddr, route_uri};
use crate::sip::header::HeaderName;
use crate::sip::response::Refusal;
use crate::sip::uri::{Aor, canonical_user};
use crate::throttle::throttled_warn;
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What `[auth]` configures (None in the configuration: authentication is off).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub users_file: PathBuf,
    pub secret_file: PathBuf,
    /// How long a nonce is accepted after it was issued.
    pub nonce_expires: Duration,
    /// Sources that are never challenged.
    pub trusted: Vec<IpNet>,
    /// Failed attempts per minute, per source and per user, before a block.
    pub max_failures: u32,
    /// How long a block lasts.
    pub block: Duration,
    /// The challenges offered, one per algorithm, in this order.
    pub algorithms: Vec<Algorithm>,
}

/// Distinct sources and users whose failures are remembered at once.
const LIMITER_CAPACITY: usize = 65_536;

pub(crate) struct Auth {
    users: Users,
    nonces: NonceKeys,
    limiter: FailureLimiter,
    trusted: Vec<IpNet>,
    algorithms: Vec<Algorithm>,
    /// Lifetime of a nonce-count record: the nonce's, plus the allowed clock drift.
    nc_ttl: u32,
}

/// Which challenge a request gets: a registrar's 401 or a proxy's 407.
#[derive(Clone, Copy)]
enum Challenge {
    Registrar,
    Proxy,
}

impl Challenge {
    fn credentials_header(self) -> &'static str {
        match self {
            Challenge::Registrar => "Authorization",
            Challenge::Proxy => "Proxy-Authorization",
        }
    }
}

impl Auth {
    /// Read the users file and the secret file. Errors name the file and line.
    pub(crate) fn open(cfg: &AuthConfig) -> Result<Auth, String> {
        let users = Users::load(&cfg.users_file)?;
        let secrets = super::nonce::load_secrets(&cfg.secret_file)?;
        let nonces = NonceKeys::new(secrets, cfg.nonce_expires)
            .map_err(|e| format!("{}: {e}", cfg.secret_file.display()))?;
        let drift = super::nonce::DRIFT.as_secs();
        Ok(Auth {
            users,
            nonces,
            limiter: FailureLimiter::new(cfg.max_failures, cfg.block, LIMITER_CAPACITY),
            trusted: cfg.trusted.clone(),
            algorithms: cfg.algorithms.clone(),
            nc_ttl: (cfg.nonce_expires.as_secs() + drift + 1).min(u64::from(u32::MAX)) as u32,
        })
    }

    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The gate (rules in the module comment). `as_uas`: the request is for this element
    /// itself (REGISTER for one of our domains, OPTIONS to the instance); `ruri_host`: the
    /// lowercased host of the Request-URI.
    pub(crate) async fn gate(
        &self,
        store: &Store,
        identity: &Identity,
        msg: &Message,
        src: IpAddr,
        as_uas: bool,
        ruri_host: &str,
    ) -> Result<(), Refusal> {
        if self.trusted.iter().any(|n| n.contains(&src)) {
            return Ok(());
        }
        if self.limiter.is_blocked(src, "", now_millis()) {
            return Err(blocked());
        }
        let method = msg.method().unwrap_or_default();
        if as_uas && method == "REGISTER" {
            let to = address(msg, &HeaderName::To).ok_or_else(|| Refusal::new(400, "Bad To"))?;
            let user = self
                .authenticate(store, msg, src, Challenge::Registrar, to.domain())
                .await?;
            return own_address(&user, &to, "may register only its own address");
        }
        if as_uas {
            return Ok(());
        }
        let from = address(msg, &HeaderName::From);
        let local_from = from.as_ref().filter(|a| identity.serves_domain(a.domain()));
        let inbound = identity.serves_domain(ruri_host);
        if matches!(method, "ACK" | "CANCEL") || in_dialog(msg, identity) {
            // Never challenged; still no relay from a foreign user to a foreign domain.
            return match local_from.is_some() || inbound || in_dialog(msg, identity) {
                true => Ok(()),
                false => Err(no_relay()),
            };
        }
        if let Some(from) = local_from {
            let user = self
                .authenticate(store, msg, src, Challenge::Proxy, from.domain())
                .await?;
            return own_address(&user, from, "From names another user");
        }
        if inbound { Ok(()) } else { Err(no_relay()) }
    }

    /// Check the credentials of `msg` for `realm`; the authenticated user name, or the
    /// answer that refuses it (a new challenge, stale when the nonce expired or its count
    /// was seen; 403 once blocked; 500 when the farm cannot record the nonce-count).
    async fn authenticate(
        &self,
        store: &Store,
        msg: &Message,
        src: IpAddr,
        kind: Challenge,
        realm: &str,
    ) -> Result<String, Refusal> {
        let Some(creds) = credentials(msg, kind, realm) else {
            return Err(self.challenge(kind, realm, false));
        };
        let now = now_millis();
        if self.limiter.is_blocked(src, &creds.username, now) {
            return Err(blocked());
        }
        let state = self.nonces.check(&creds.nonce, now);
        if state == NonceState::Invalid {
            return Err(self.challenge(kind, realm, false));
        }
        let method = msg.method().unwrap_or_default();
        let valid = self
            .users
            .get(&creds.username, realm)
            .is_some_and(|h| digest::verify(&creds, method, h.for_algorithm(creds.algorithm)));
        if !valid {
            return Err(self.failed(src, &creds.username, kind, realm, now));
        }
        if state == NonceState::Stale {
            return Err(self.challenge(kind, realm, true));
        }
        let nc = u64::from(creds.nc.unwrap_or(0));
        match store.raise(&nonce_id(&creds.nonce), nc, self.nc_ttl).await {
            Ok(true) => Ok(creds.username),
            // A nonce-count seen before: a replay (or a retransmission of an answered request).
            Ok(false) => Err(self.challenge(kind, realm, true)),
            Err(e) => {
                throttled_warn!(error = %e, "cannot record a nonce-count");
                Err(Refusal::new(500, "Location Service Unavailable").with("Retry-After", 5))
            }
        }
    }

    /// A failed attempt: counted, and refused with a new challenge, or 403 when it starts a
    /// block (one log line per block, not per packet).
    fn failed(&self, src: IpAddr, user: &str, kind: Challenge, realm: &str, now: u64) -> Refusal {
        match self.limiter.failed(src, user, now) {
            Some(block) => {
                tracing::warn!(%block, seconds = (block.until.saturating_sub(now)) / 1000, "blocked after too many failed authentication attempts");
                blocked()
            }
            None => self.challenge(kind, realm, false),
        }
    }

    /// 401 or 407 with one challenge per configured algorithm, in the configured order
    /// (RFC 8760 2.4: the most preferred first; see `auth.algorithms` for why MD5 leads by
    /// default).
    fn challenge(&self, kind: Challenge, realm: &str, stale: bool) -> Refusal {
        let nonce = self.nonces.issue(now_millis());
        let (refusal, header) = match kind {
            Challenge::Registrar => (Refusal::new(401, "Unauthorized"), "WWW-Authenticate"),
            Challenge::Proxy => (
                Refusal::new(407, "Proxy Authentication Required"),
                "Proxy-Authenticate",
            ),
        };
        self.algorithms.iter().copied().fold(refusal, |r, alg| {
            r.with(header, digest::challenge(realm, &nonce, alg, stale))
        })
    }
}

/// The credentials of `msg` for `realm` (the first that parses; a UA may send several).
fn credentials(msg: &Message, kind: Challenge, realm: &str) -> Option<Credentials> {
    let name = HeaderName::from_wire(kind.credentials_header());
    msg.all(&name)
        .filter_map(|h| digest::parse(&h.value).ok())
        .find(|c| c.realm.eq_ignore_ascii_case(realm))
}

/// The canonical AOR of the To or From header.
fn address(msg: &Message, name: &HeaderName) -> Option<Aor> {
    let na = NameAddr::parse(msg.get(name)?).ok()?;
    Aor::from_uri(&na.uri).ok()
}

/// The authenticated `user` must be the user of `aor`.
fn own_address(user: &str, aor: &Aor, why: &'static str) -> Result<(), Refusal> {
    let aor_user = aor.as_str().rsplit_once('@').map_or("", |(u, _)| u);
    if canonical_user(user) == aor_user {
        Ok(())
    } else {
        Err(Refusal::new(403, format!("Forbidden ({why})")))
    }
}

/// A request inside a dialog this farm record-routed: a To tag, and a top Route naming the
/// farm.
fn in_dialog(msg: &Message, identity: &Identity) -> bool {
    let tagged = msg
        .get(&HeaderName::To)
        .and_then(|t| NameAddr::parse(t).ok())
        .is_some_and(|a| a.tag().is_some());
    tagged
        && msg
            .list(&HeaderName::Route)
            .ok()
            .and_then(|r| r.first().and_then(|v| route_uri(v)))
            .is_some_and(|u| identity.names_farm(&u))
}

fn blocked() -> Refusal {
    Refusal::new(403, "Forbidden (too many failed attempts)")
}

fn no_relay() -> Refusal {
    Refusal::new(403, "Forbidden (relaying denied)")
}

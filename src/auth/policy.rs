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
//! 5. in-dialog requests (a To tag and a top Route naming the farm, signed by the farm for
//!    this dialog) pass and may go anywhere;
//! 6. ACK and CANCEL pass; they may go anywhere when their From is one of our users;
//! 7. a request whose From is in one of our domains needs credentials for realm = the From
//!    domain, as the From user (407, then 403 for another user's credentials);
//! 8. a foreign user may reach our users (inbound calls) and nothing else: the proxy refuses
//!    (403) any other destination once it knows where the request really goes.

pub use super::digest::Algorithm;
use super::digest::{self, Credentials};
use super::limit::FailureLimiter;
use super::nonce::{NonceKeys, NonceState, nonce_id};
use super::users::Users;
use crate::clock::now_millis;
use crate::identity::{Identity, in_our_dialog, vouched_to_our_flow};
use crate::location::Store;
use crate::sip::Message;
use crate::sip::addr::NameAddr;
use crate::sip::header::HeaderName;
use crate::sip::response::Refusal;
use crate::sip::uri::{Aor, canonical_user};
use crate::throttle::throttled_warn;
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What `[auth]` configures (None in the configuration: authentication is off).
#[derive(Debug, Clone, PartialEq)]
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
    /// Swapped whole by a reload (SIGHUP): a request sees the old file or the new one.
    users: crate::live::Live<Users>,
    users_file: PathBuf,
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
            users: crate::live::Live::new(users),
            users_file: cfg.users_file.clone(),
            nonces,
            limiter: FailureLimiter::new(cfg.max_failures, cfg.block, LIMITER_CAPACITY),
            trusted: cfg.trusted.clone(),
            algorithms: cfg.algorithms.clone(),
            nc_ttl: (cfg.nonce_expires.as_secs() + drift + 1).min(u64::from(u32::MAX)) as u32,
        })
    }

    pub(crate) fn user_count(&self) -> usize {
        self.current_users().len()
    }

    fn current_users(&self) -> std::sync::Arc<Users> {
        self.users.get()
    }

    /// Read the users file again (SIGHUP): the new users, or why the file was refused (the
    /// old users stay).
    pub(crate) fn reload_users(&self) -> Result<usize, String> {
        self.read_users().map(|u| self.use_users(u))
    }

    /// The users file as it is now, not yet in use (a reload checks it first).
    pub(crate) fn read_users(&self) -> Result<Users, String> {
        Users::load(&self.users_file)
    }

    /// Put `users` in place of the current ones; how many there are.
    pub(crate) fn use_users(&self, users: Users) -> usize {
        let n = users.len();
        self.users.set(users);
        n
    }

    /// The gate (rules in the module comment). `as_uas`: the request is for this element
    /// itself (REGISTER for one of our domains, OPTIONS to the instance). Passing, it says
    /// whether the request may be relayed anywhere (true) or only to a registered user of
    /// ours: that is decided by the proxy once it knows where the request really goes.
    pub(crate) async fn gate(
        &self,
        store: &Store,
        identity: &Identity,
        msg: &Message,
        src: IpAddr,
        as_uas: bool,
    ) -> Result<bool, Refusal> {
        if self.trusted.iter().any(|n| n.contains(&src.to_canonical())) {
            return Ok(true);
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
            own_address(&user, &to, "may register only its own address")?;
            return Ok(false);
        }
        if as_uas {
            return Ok(false);
        }
        let from = address(msg, &HeaderName::From);
        let local_from = from.as_ref().filter(|a| identity.serves_domain(a.domain()));
        if in_our_dialog(identity, msg) {
            return Ok(true);
        }
        if vouched_to_our_flow(identity, msg) {
            // Routed by another instance to a registered UA's flow held here, vouched for
            // this very request (that instance applied these rules): it may reach that UA,
            // nothing else. A flow token alone (seen in a Record-Route) does not pass.
            return Ok(false);
        }
        if matches!(method, "ACK" | "CANCEL") {
            // Never challenged (RFC 3261 22.1): they follow an INVITE from one of our users
            // (authenticated then) wherever it went.
            return Ok(local_from.is_some());
        }
        let Some(from) = local_from else {
            // A foreign user: our users only (inbound calls), never a relay.
            return Ok(false);
        };
        let user = self
            .authenticate(store, msg, src, Challenge::Proxy, from.domain())
            .await?;
        own_address(&user, from, "From names another user")?;
        Ok(true)
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
        if self.limiter.is_blocked(src, "", now) {
            return Err(blocked());
        }
        if !names_request_uri(&creds.uri, msg.request_uri().unwrap_or_default()) {
            // RFC 7616 3.4.6 / RFC 2617 3.2.2.5: credentials are for the resource they name.
            return Err(Refusal::new(
                400,
                "Digest uri does not match the Request-URI",
            ));
        }
        let state = self.nonces.check(&creds.nonce, now);
        if state == NonceState::Invalid {
            return Err(self.challenge(kind, realm, false));
        }
        let method = msg.method().unwrap_or_default();
        let valid = self
            .current_users()
            .get(&creds.username, realm)
            .is_some_and(|h| digest::verify(&creds, method, h.for_algorithm(creds.algorithm)));
        if !valid {
            return Err(self.failed(src, &creds.username, kind, realm, now));
        }
        if state == NonceState::Stale {
            return Err(self.challenge(kind, realm, true));
        }
        let nc = u64::from(creds.nc.unwrap_or(0));
        let tx = transaction_key(msg);
        match store
            .raise(&nonce_id(&creds.nonce), nc, tx, self.nc_ttl)
            .await
        {
            Ok(true) => Ok(creds.username),
            // A nonce-count seen before in another transaction: a replay.
            Ok(false) => Err(self.challenge(kind, realm, true)),
            Err(e) => {
                throttled_warn!(error = %e, "cannot record a nonce-count");
                Err(Refusal::new(500, "Location Service Unavailable").with("Retry-After", 5))
            }
        }
    }

    /// A failed attempt: counted for the source and the user, and refused with a new
    /// challenge, or 403 when the source becomes blocked (one log line per block, not per
    /// packet). A user over its limit blocks each source that keeps failing for it, not the
    /// user itself: its own phone keeps registering.
    fn failed(&self, src: IpAddr, user: &str, kind: Challenge, realm: &str, now: u64) -> Refusal {
        let counted = self.limiter.failed(src, user, now);
        let block = match counted {
            Some(b) if b.addr.is_some() => Some(b),
            _ if self.limiter.user_blocked(user, now) => self.limiter.block_source(src, now),
            _ => None,
        };
        crate::metrics::auth_failure();
        match block {
            Some(block) => {
                crate::metrics::auth_block();
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

/// The transaction a request belongs to (RFC 3261 17.2.3: top Via branch, plus Call-ID and
/// CSeq): a retransmission carries the same nonce-count in the same transaction and is let
/// through again (a stateless proxy forwards every retransmission, 16.11), a replay does not.
fn transaction_key(msg: &Message) -> u64 {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    let branch = msg
        .top_via()
        .ok()
        .and_then(|v| v.branch().map(str::to_owned))
        .unwrap_or_default();
    let (cseq, method) = msg.cseq().unwrap_or((0, ""));
    for part in [
        branch.as_bytes(),
        msg.call_id().unwrap_or("").as_bytes(),
        method.as_bytes(),
    ] {
        h.update(part);
        h.update([0]);
    }
    h.update(cseq.to_be_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Does the digest `uri` name the Request-URI? The same text, the same URI by RFC 3261
/// 19.1.4, or the Request-URI without its scheme (some clients send the host alone).
fn names_request_uri(digest_uri: &str, request_uri: &str) -> bool {
    let bare = request_uri
        .strip_prefix("sip:")
        .or_else(|| request_uri.strip_prefix("sips:"))
        .unwrap_or(request_uri);
    digest_uri == request_uri
        || digest_uri.eq_ignore_ascii_case(bare)
        || crate::sip::uri::same_contact(digest_uri, request_uri)
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

fn blocked() -> Refusal {
    Refusal::new(403, "Forbidden (too many failed attempts)")
}

//! The `[auth]` section: digest authentication (on when a users file is given), the shared
//! nonce secret, trusted peers and the limits on failed attempts.

use super::file::FileAuth;
use super::origin::Source;
use super::{AuthConfig, Overrides};
use crate::auth::policy::Algorithm;
use ipnet::IpNet;
use std::time::Duration;

/// Fewer allowed failures a minute than this would lock out a phone retrying with a
/// mistyped password on its own (RFC 3261 22: every request may be challenged).
const DEFAULT_MAX_FAILURES: u32 = 20;
const DEFAULT_BLOCK_SECONDS: u64 = 300;
const DEFAULT_NONCE_EXPIRES: u64 = 300;

pub(super) fn resolve(
    o: &Overrides,
    f: &FileAuth,
    src: Source,
) -> Result<Option<AuthConfig>, String> {
    let (users, users_at) = src.pick(
        "--users",
        o.users.clone(),
        "auth.users_file",
        f.users_file.clone(),
    );
    let (secret, secret_at) = src.pick(
        "--auth-secret-file",
        o.auth_secret_file.clone(),
        "auth.secret_file",
        f.secret_file.clone(),
    );
    let (expires, expires_at) = src.pick(
        "--nonce-expires",
        o.nonce_expires,
        "auth.nonce_expires",
        f.nonce_expires,
    );
    let expires = expires.unwrap_or(DEFAULT_NONCE_EXPIRES);
    if !(1..=86_400).contains(&expires) {
        return Err(format!(
            "{expires_at}: {expires} is out of range (1 to 86400 seconds)"
        ));
    }
    let max_failures = f.max_failures.unwrap_or(DEFAULT_MAX_FAILURES);
    if max_failures == 0 {
        return Err(format!(
            "{}: must be at least 1",
            src.key("auth.max_failures")
        ));
    }
    let block = f.block_seconds.unwrap_or(DEFAULT_BLOCK_SECONDS);
    if !(1..=86_400).contains(&block) {
        return Err(format!(
            "{}: {block} is out of range (1 to 86400 seconds)",
            src.key("auth.block_seconds")
        ));
    }
    let trusted = networks(
        f.trusted.as_deref().unwrap_or_default(),
        src,
        "auth.trusted",
    )?;
    let algorithms = algorithms(f.algorithms.as_deref(), src)?;
    let Some(users_file) = users else {
        return Ok(None);
    };
    let Some(secret_file) = secret else {
        return Err(format!(
            "{users_at}: authentication needs a shared nonce secret too ({secret_at}), so that \
             every instance accepts the nonces of the others"
        ));
    };
    Ok(Some(AuthConfig {
        users_file,
        secret_file,
        nonce_expires: Duration::from_secs(expires),
        trusted,
        max_failures,
        block: Duration::from_secs(block),
        algorithms,
    }))
}

/// The challenge order. MD5 first by default: RFC 8760 lets the server order by preference
/// and has the client take the first it supports, but many deployed clients (sipp 3.6 among
/// them) answer only the first challenge and know only MD5; SHA-256 is still offered, and a
/// deployment of SHA-256 phones can put it first.
fn algorithms(list: Option<&[String]>, src: Source) -> Result<Vec<Algorithm>, String> {
    let Some(list) = list else {
        return Ok(vec![Algorithm::Md5, Algorithm::Sha256]);
    };
    let at = src.key("auth.algorithms");
    let mut out: Vec<Algorithm> = Vec::new();
    for name in list {
        let a = Algorithm::from_name(Some(name.trim()))
            .ok_or_else(|| format!("{at}: '{name}' is not MD5 or SHA-256"))?;
        if out.contains(&a) {
            return Err(format!("{at}: '{name}' is listed twice"));
        }
        out.push(a);
    }
    if out.is_empty() {
        return Err(format!("{at}: at least one of MD5, SHA-256"));
    }
    Ok(out)
}

/// A list of IP networks (`192.0.2.0/24`, `2001:db8::/32`) or single addresses.
pub(super) fn networks(
    list: &[String],
    src: Source,
    key: &'static str,
) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|n| {
            let n = n.trim();
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "{}: '{n}' is not an IP network (e.g. 192.0.2.0/24)",
                        src.key(key)
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn off_without_users_and_errors_say_where() {
        let src = Source::new("FILE");
        assert!(
            resolve(&Overrides::default(), &FileAuth::default(), src)
                .unwrap()
                .is_none()
        );
        let o = Overrides {
            users: Some(PathBuf::from("u")),
            ..Default::default()
        };
        let e = resolve(&o, &FileAuth::default(), src).unwrap_err();
        assert!(
            e.starts_with("--users: ") && e.contains("auth.secret_file"),
            "{e}"
        );
        let o = Overrides {
            users: Some(PathBuf::from("u")),
            auth_secret_file: Some(PathBuf::from("s")),
            nonce_expires: Some(0),
            ..Default::default()
        };
        assert_eq!(
            resolve(&o, &FileAuth::default(), src).unwrap_err(),
            "--nonce-expires: 0 is out of range (1 to 86400 seconds)"
        );
        let f = FileAuth {
            trusted: Some(vec!["10.0.0.0/8".into(), "bogus".into()]),
            ..Default::default()
        };
        let e = resolve(&Overrides::default(), &f, src).unwrap_err();
        assert_eq!(
            e,
            "FILE: key 'auth.trusted': 'bogus' is not an IP network (e.g. 192.0.2.0/24)"
        );
    }

    #[test]
    fn on_with_users_and_secret() {
        let o = Overrides {
            users: Some(PathBuf::from("u")),
            auth_secret_file: Some(PathBuf::from("s")),
            ..Default::default()
        };
        let f = FileAuth {
            trusted: Some(vec!["192.0.2.7".into()]),
            ..Default::default()
        };
        let a = resolve(&o, &f, Source::new("")).unwrap().unwrap();
        assert_eq!(a.nonce_expires, Duration::from_secs(300));
        assert_eq!(a.max_failures, DEFAULT_MAX_FAILURES);
        assert!(a.trusted[0].contains(&"192.0.2.7".parse::<std::net::IpAddr>().unwrap()));
    }
}

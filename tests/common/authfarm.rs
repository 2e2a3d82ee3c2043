//! A farm with authentication on: two sipfarm instances over two memcached nodes, sharing
//! one users file and one nonce secret (`--users`, `--auth-secret-file`).
//!
//! The nodes listen on 127.0.0.11 and 127.0.0.12, not on 127.0.0.1 where the user agents
//! are: sipfarm never sends anything to a node's address and refuses a Contact naming it,
//! whatever the port, so a node on 127.0.0.1 would make every phone there unreachable.

use super::digest::users_line;
use super::processes::TempDir;
use super::ua::Ua;
use super::{Memcached, Sipfarm};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the farm's memcached nodes listen.
pub const NODE_IPS: [&str; 2] = ["127.0.0.11", "127.0.0.12"];

/// The users of most tests, with their passwords.
pub const ALICE: (&str, &str) = ("alice", "alice-secret-1");
pub const BOB: (&str, &str) = ("bob", "bob-secret-2");

pub struct AuthFarm {
    pub mc: Vec<Memcached>,
    pub a: Sipfarm,
    pub b: Sipfarm,
    pub dir: TempDir,
}

impl AuthFarm {
    /// Alice and bob in the users file, no configuration file, `extra` flags on both.
    pub fn start(extra: &[&str]) -> AuthFarm {
        Self::start_with(&[ALICE, BOB], None, extra)
    }

    /// `users` in the users file (their HA1s computed here, as `sipfarm user add` writes
    /// them), `config` (TOML) as `--config` when given, and `extra` flags on both.
    pub fn start_with(users: &[(&str, &str)], config: Option<&str>, extra: &[&str]) -> AuthFarm {
        let dir = TempDir::new("sipfarm-auth-");
        let mc: Vec<Memcached> = NODE_IPS.iter().map(|ip| Memcached::start_at(ip)).collect();
        write_users(&dir.join("users"), users);
        std::fs::write(dir.join("secret"), "test-farm-secret-0123456789abcdef\n").unwrap();
        if let Some(text) = config {
            std::fs::write(dir.join("sipfarm.toml"), text).unwrap();
        }
        let a = Self::instance(&mc, &dir, config.is_some(), extra, Some("a"));
        let b = Self::instance(&mc, &dir, config.is_some(), extra, Some("b"));
        AuthFarm { mc, a, b, dir }
    }

    fn instance(
        mc: &[Memcached],
        dir: &TempDir,
        config: bool,
        extra: &[&str],
        log: Option<&str>,
    ) -> Sipfarm {
        let users = dir.join("users").display().to_string();
        let secret = dir.join("secret").display().to_string();
        let cfg = dir.join("sipfarm.toml").display().to_string();
        // The farm URI is the domain, as in a deployment whose DNS has SRV records for it:
        // in-dialog requests may then come back through either instance.
        let mut args = vec![
            "--users",
            &users,
            "--auth-secret-file",
            &secret,
            "--farm-uri",
            "sip:example.test",
        ];
        if config {
            args.extend(["--config", cfg.as_str()]);
        }
        args.extend_from_slice(extra);
        let refs: Vec<&Memcached> = mc.iter().collect();
        let list = refs.iter().map(|m| m.addr()).collect::<Vec<_>>().join(",");
        let mut all = vec!["--memcached", list.as_str()];
        all.extend_from_slice(&args);
        let log = log.map(|name| dir.join(&format!("{name}.log")));
        Sipfarm::start_logging(&all, log.as_deref())
    }

    /// What instance `name` ("a" or "b") logged so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(&format!("{name}.log"))).unwrap_or_default()
    }

    pub fn users_file(&self) -> PathBuf {
        self.dir.join("users")
    }

    /// Instance a or b (0 or 1).
    pub fn at(&self, i: usize) -> SocketAddr {
        [self.a.addr(), self.b.addr()][i % 2]
    }
}

/// A users file with `users`, one line each.
pub fn write_users(path: &std::path::Path, users: &[(&str, &str)]) {
    let mut text = String::from("# written by the tests\n");
    for (user, password) in users {
        text.push_str(&users_line(user, password));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// An out-of-dialog request from `from_aor` (user@domain) sent by `ua` to `ruri`; `to` is the
/// whole To value. The From tag follows from the Call-ID, so that the same arguments give
/// the same request again (a CANCEL, an ACK). A MESSAGE carries `hello`.
#[allow(clippy::too_many_arguments)]
pub fn sip_request(
    ua: &Ua,
    method: &str,
    ruri: &str,
    from_aor: &str,
    to: &str,
    call_id: &str,
    cseq: u32,
    branch: &str,
) -> String {
    let body = if method == "MESSAGE" { "hello" } else { "" };
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: text/plain\r\n"
    };
    let user = from_aor.split('@').next().unwrap_or_default();
    let (ip, port) = (ua.ip, ua.port);
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{port};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{from_aor}>;tag=f{call_id}\r\nTo: {to}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{user}@{ip}:{port}>\r\n\
         {ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

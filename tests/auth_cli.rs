//! The users file through the binary, and authentication's start-up errors:
//!
//! - `sipfarm user add USER@DOMAIN --users FILE` reads the password from standard input and
//!   writes `USER@DOMAIN md5:HA1 sha256:HA1` (RFC 7616 3.4.2: HA1 = H(user:realm:password),
//!   realm = the domain), never the password; a new file is 0600; adding again replaces the
//!   HA1s, other lines are kept; `user rm` removes the line; the file works for `serve`;
//! - `serve --users` without a nonce secret exits with status 2 and names both (every
//!   instance must accept the others' nonces, RFC 7616 3.3 with a shared secret); a secret
//!   shorter than 16 bytes is refused the same way.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run the binary with `stdin`, stopped after 10 s if it is still running (a `serve` that
/// should have refused to start); (status, stdout + stderr).
fn run(args: &[&str], stdin: &str) -> (i32, String) {
    let out = std::env::temp_dir().join(unique("sipfarm-cli-") + ".out");
    let file = std::fs::File::create(&out).unwrap();
    let mut cmd = Command::new(sipfarm_bin());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill(); // our own child, by its handle
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    (status, text)
}

fn user(cmd: &str, aor: &str, file: &std::path::Path, password: &str) -> (i32, String) {
    run(
        &["user", cmd, aor, "--users", file.to_str().unwrap()],
        password,
    )
}

/// The line of `aor` in the users file.
fn line_of(file: &std::path::Path, aor: &str) -> Option<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().next() == Some(aor))
        .map(str::to_owned)
}

#[test]
fn user_add_and_rm_write_ha1s_never_passwords() {
    let dir = TempDir::new("sipfarm-users-");
    let file = dir.join("users");
    let (first, second) = ("Tr0ub4dor-first-pw", "correct-horse-second-pw");

    let (code, text) = user("add", "alice@example.test", &file, &format!("{first}\n"));
    assert_eq!(code, 0, "{text}");
    let (code, text) = user("add", "bob@example.test", &file, "bob-pw\n");
    assert_eq!(code, 0, "{text}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "a new users file is readable by its owner only"
    );
    assert_eq!(
        line_of(&file, "alice@example.test").unwrap(),
        users_line("alice", first),
        "USER@DOMAIN md5:HA1 sha256:HA1, realm = the domain"
    );
    let bob = line_of(&file, "bob@example.test").unwrap();
    let content = std::fs::read_to_string(&file).unwrap();
    assert!(
        !content.contains(first) && !content.contains("bob-pw"),
        "{content}"
    );

    // Again, with another password: new HA1s, bob's line kept.
    let (code, text) = user("add", "alice@example.test", &file, &format!("{second}\r\n"));
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        line_of(&file, "alice@example.test").unwrap(),
        users_line("alice", second)
    );
    assert_eq!(line_of(&file, "bob@example.test").unwrap(), bob);
    let content = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        content.matches("alice@example.test").count(),
        1,
        "{content}"
    );
    assert!(!content.contains(second), "{content}");

    // No password: refused, nothing changed.
    let (code, text) = user("add", "carol@example.test", &file, "");
    assert_eq!(code, 2, "{text}");
    assert!(line_of(&file, "carol@example.test").is_none());

    // The file as the binary wrote it works for serve.
    std::fs::write(dir.join("secret"), "cli-test-secret-0123456789\n").unwrap();
    let users = file.display().to_string();
    let secret = dir.join("secret").display().to_string();
    let s = Sipfarm::start(&["--users", &users, "--auth-secret-file", &secret]);
    let ua = Ua::new();
    let contact = format!("<sip:alice@127.0.0.1:{}>", ua.port);
    let r = register_auth(
        &ua,
        s.addr(),
        ("alice", second),
        Alg::Md5,
        &[&contact],
        Some(300),
    );
    assert_eq!(r.code, 200, "the new password:\n{}", r.text);
    let r = register_auth(
        &ua,
        s.addr(),
        ("alice", first),
        Alg::Sha256,
        &[&contact],
        Some(300),
    );
    assert_eq!(r.code, 401, "the old password:\n{}", r.text);
    drop(s);

    // rm: the line goes, the others stay; twice is an error.
    let (code, text) = user("rm", "alice@example.test", &file, "");
    assert_eq!(code, 0, "{text}");
    assert!(line_of(&file, "alice@example.test").is_none());
    assert_eq!(line_of(&file, "bob@example.test").unwrap(), bob);
    let (code, text) = user("rm", "alice@example.test", &file, "");
    assert_eq!(code, 2, "{text}");
}

#[test]
fn serve_with_users_needs_a_shared_secret() {
    let dir = TempDir::new("sipfarm-nosecret-");
    let users = dir.join("users");
    write_users(&users, &[ALICE]);
    let port = free_port();
    let listen = format!("udp:127.0.0.1:{port}");
    let users = users.display().to_string();
    let (code, text) = run(&["serve", "--listen", &listen, "--users", &users], "");
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--users") && text.contains("secret"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");

    let short = dir.join("short-secret");
    std::fs::write(&short, "too-short\n").unwrap();
    let short = short.display().to_string();
    let args = [
        "serve",
        "--listen",
        &listen,
        "--users",
        &users,
        "--auth-secret-file",
        &short,
    ];
    let (code, text) = run(&args, "");
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("short-secret") && text.contains("16"),
        "{text}"
    );
}

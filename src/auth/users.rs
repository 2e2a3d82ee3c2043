//! The users file: who may register, as HA1 values (RFC 7616 3.4.2: `H(user:realm:password)`),
//! so that the password itself is never stored; RFC 3261 19.1.4 (the user part of a SIP URI
//! is case-sensitive, the host is not) and RFC 8760 (both MD5 and SHA-256 kept, since the
//! phone picks among the challenges).
//!
//! Why a plain file: every instance reads the same file at start (shipped with the config);
//! the command line edits it, atomically, so that a starting instance never reads half of it.
//! One user per line: `USER@DOMAIN md5:HEX sha256:HEX`, the realm being the lowercased
//! domain; `#` comment lines and blank lines are allowed.

use super::digest::{Algorithm, ha1, hex};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The largest users file read or written.
pub(crate) const MAX_FILE: u64 = 64 << 20;
/// The longest line.
pub(crate) const MAX_LINE: usize = 1024;
/// The longest user part.
pub(crate) const MAX_USER: usize = 256;
/// The longest domain (RFC 1035 2.3.4, with brackets for IPv6).
const MAX_DOMAIN: usize = 253;

/// The two HA1 values of one user, lowercase hex.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Ha1s {
    md5: String,
    sha256: String,
}

impl std::fmt::Debug for Ha1s {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ha1s { .. }") // password equivalents: never in logs
    }
}

impl Ha1s {
    fn compute(user: &str, realm: &str, password: &str) -> Ha1s {
        Ha1s {
            md5: hex(&ha1(Algorithm::Md5, user, realm, password)),
            sha256: hex(&ha1(Algorithm::Sha256, user, realm, password)),
        }
    }

    /// The HA1 (lowercase hex) for the algorithm of the credentials.
    pub(crate) fn for_algorithm(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Md5 => &self.md5,
            Algorithm::Sha256 => &self.sha256,
        }
    }
}

/// Every user of the file, by realm (lowercased domain) then user (as written).
#[derive(Default)]
pub(crate) struct Users {
    by_realm: HashMap<String, HashMap<String, Ha1s>>,
    count: usize,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({})", self.count)
    }
}

impl Users {
    /// Read the users file. Errors name the file, the line and what is wrong (never a field
    /// that might be a password typed in the wrong place).
    pub(crate) fn load(path: &Path) -> Result<Users, String> {
        let Some(text) = read_text(path)? else {
            return Err(format!("{}: no such file", path.display()));
        };
        let at = |n: usize, why: &str| format!("{}: line {n}: {why}", path.display());
        let mut users = Users::default();
        for (i, line) in text.lines().enumerate() {
            if line.len() > MAX_LINE {
                return Err(at(i + 1, &format!("longer than {MAX_LINE} bytes")));
            }
            let Some((user, realm, ha1s)) = parse_line(line).map_err(|why| at(i + 1, &why))? else {
                continue;
            };
            let realm_users = users.by_realm.entry(realm).or_default();
            match realm_users.entry(user.to_owned()) {
                Entry::Occupied(e) => {
                    return Err(at(i + 1, &format!("{} is listed twice", e.key())));
                }
                Entry::Vacant(e) => e.insert(ha1s),
            };
            users.count += 1;
        }
        Ok(users)
    }

    /// The HA1s of `user` (exact) in `realm` (any case).
    pub(crate) fn get(&self, user: &str, realm: &str) -> Option<&Ha1s> {
        let users = match self.by_realm.get(realm) {
            Some(u) => u,
            None => self.by_realm.get(&realm.to_ascii_lowercase())?,
        };
        users.get(user)
    }

    /// How many users.
    pub(crate) fn len(&self) -> usize {
        self.count
    }
}

/// One line: `None` for a blank or comment line, else (user, realm, HA1s).
fn parse_line(line: &str) -> Result<Option<(&str, String, Ha1s)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split_ascii_whitespace();
    let (user, realm) = split_aor(fields.next().unwrap_or_default())?;
    let (mut md5, mut sha256) = (None, None);
    for (i, field) in fields.enumerate() {
        let (slot, digits, len) = if let Some(d) = field.strip_prefix("md5:") {
            (&mut md5, d, 32)
        } else if let Some(d) = field.strip_prefix("sha256:") {
            (&mut sha256, d, 64)
        } else {
            return Err(format!("field {} is neither md5:HEX nor sha256:HEX", i + 2));
        };
        if slot.is_some() {
            return Err(format!("field {} repeats an algorithm", i + 2));
        }
        if digits.len() != len || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("field {} is not {len} hex digits", i + 2));
        }
        *slot = Some(digits.to_ascii_lowercase());
    }
    match (md5, sha256) {
        (Some(md5), Some(sha256)) => Ok(Some((user, realm, Ha1s { md5, sha256 }))),
        _ => Err("both md5:HEX and sha256:HEX are needed".into()),
    }
}

/// `user@domain` -> (user as written, lowercased domain), both checked.
fn split_aor(aor: &str) -> Result<(&str, String), String> {
    let (user, domain) = aor.split_once('@').ok_or("not user@domain")?;
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '@';
    if user.is_empty() || user.len() > MAX_USER || user.contains(bad) || user.starts_with('#') {
        return Err(format!(
            "bad user part (1 to {MAX_USER} bytes, no '@', no space or control character, no leading '#')"
        ));
    }
    if !is_domain(domain) {
        return Err("bad domain (a host name, an IPv4 address or [IPv6])".into());
    }
    Ok((user, domain.to_ascii_lowercase()))
}

/// A host name (RFC 1123 labels), an IPv4 address or a bracketed IPv6 address.
fn is_domain(d: &str) -> bool {
    if let Some(inner) = d.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    if d.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !d.is_empty() && d.len() <= MAX_DOMAIN && d.split('.').all(label_ok)
}

/// Add `aor` with `password`, or replace its line; other lines stay as they were. The file
/// is created (mode 0600) if missing and always replaced atomically.
pub(crate) fn add(path: &Path, aor: &str, password: &str) -> Result<(), String> {
    let (user, realm) = split_aor(aor).map_err(|why| format!("{aor:?}: {why}"))?;
    if password.is_empty() {
        return Err("empty password".into());
    }
    let ha1s = Ha1s::compute(user, &realm, password);
    let line = format!("{user}@{realm} md5:{} sha256:{}", ha1s.md5, ha1s.sha256);
    let old = read_text(path)?.unwrap_or_default();
    let (text, _) = rewrite(&old, user, &realm, Some(&line));
    write_atomic(path, &text)
}

/// Remove the line of `aor`; `false` when it was not there (the file is then left alone).
pub(crate) fn remove(path: &Path, aor: &str) -> Result<bool, String> {
    let (user, realm) = split_aor(aor).map_err(|why| format!("{aor:?}: {why}"))?;
    let Some(old) = read_text(path)? else {
        return Ok(false);
    };
    let (text, found) = rewrite(&old, user, &realm, None);
    if found {
        write_atomic(path, &text)?;
    }
    Ok(found)
}

/// The file with every line of (user, realm) replaced by `line` (once) or dropped, and
/// `line` appended if there was none; whether one was found.
fn rewrite(old: &str, user: &str, realm: &str, line: Option<&str>) -> (String, bool) {
    let mut out = String::with_capacity(old.len() + line.map_or(0, |l| l.len() + 1));
    let mut found = false;
    for piece in old.split_inclusive('\n') {
        let content = piece.trim_end_matches(['\n', '\r']);
        if !is_line_of(content, user, realm) {
            out.push_str(piece);
            continue;
        }
        if let (Some(line), false) = (line, found) {
            out.push_str(line);
            out.push_str(&piece[content.len()..]);
        }
        found = true;
    }
    if let (Some(line), false) = (line, found) {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, found)
}

/// Is this line the entry of (user, realm)?
fn is_line_of(content: &str, user: &str, realm: &str) -> bool {
    let first = content.split_ascii_whitespace().next().unwrap_or_default();
    if first.starts_with('#') {
        return false;
    }
    first
        .split_once('@')
        .is_some_and(|(u, d)| u == user && d.eq_ignore_ascii_case(realm))
}

/// The file as text, `None` if it does not exist; bounded by [`MAX_FILE`]. A file that is
/// not UTF-8 is reported with the line where that starts.
fn read_text(path: &Path) -> Result<Option<String>, String> {
    let name = path.display();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    let mut raw = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("{name}: {e}"))?;
    if raw.len() as u64 > MAX_FILE {
        return Err(format!("{name}: larger than {} MiB", MAX_FILE >> 20));
    }
    String::from_utf8(raw).map(Some).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
        format!("{name}: line {line}: not UTF-8")
    })
}

/// Replace `path` by `text` atomically: a temporary file in the same directory, written and
/// synced, then renamed over it. A new file gets mode 0600; an existing one keeps its mode
/// and (when we may) its owner, so that `sudo sipfarm user add` does not lock the service
/// out of its own file.
fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    let name = path.display();
    if text.len() as u64 > MAX_FILE {
        return Err(format!("{name}: would grow beyond {} MiB", MAX_FILE >> 20));
    }
    let tmp = temp_path(path).ok_or_else(|| format!("{name}: not a file path"))?;
    let result = write_temp(path, &tmp, text).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(format!("{name}: {e}"));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all()); // the rename, durably; best effort
    }
    Ok(())
}

fn temp_path(path: &Path) -> Option<PathBuf> {
    let file = path.file_name()?.to_string_lossy();
    let unique = format!(
        ".{file}.tmp-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    );
    Some(path.with_file_name(unique))
}

fn write_temp(path: &Path, tmp: &Path, text: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    match fs::metadata(path) {
        Ok(old) => {
            f.set_permissions(old.permissions())?;
            let new = f.metadata()?;
            if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
                std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()))?;
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        Err(e) => return Err(e),
    }
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let name = format!(
                "sipfarm-users-{}-{:x}",
                std::process::id(),
                fastrand::u64(..)
            );
            let dir = std::env::temp_dir().join(name);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn add_replace_remove_round_trip() {
        let dir = TempDir::new();
        let path = dir.0.join("users");
        add(&path, "alice@Example.COM", "wonderland").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let users = Users::load(&path).unwrap();
        assert_eq!(users.len(), 1);
        let h = users.get("alice", "example.com").unwrap();
        assert_eq!(
            h.for_algorithm(Algorithm::Md5),
            "93dfce8dfebfae8af4a726982429d23a"
        );
        assert_eq!(h.for_algorithm(Algorithm::Sha256).len(), 64);
        assert!(users.get("alice", "EXAMPLE.com").is_some());
        assert!(
            users.get("Alice", "example.com").is_none(),
            "user part is case-sensitive"
        );

        fs::write(&path, "# team\nbob@example.com md5:00000000000000000000000000000000 sha256:0000000000000000000000000000000000000000000000000000000000000000\n# end").unwrap();
        add(&path, "alice@example.com", "first").unwrap();
        add(&path, "alice@EXAMPLE.com", "wonderland").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# team\nbob@example.com md5:0000"),
            "{text}"
        );
        assert!(
            text.contains("\n# end\nalice@example.com md5:93dfce8d"),
            "{text}"
        );
        assert_eq!(text.matches("alice@").count(), 1, "{text}");
        assert_eq!(Users::load(&path).unwrap().len(), 2);

        assert!(remove(&path, "alice@example.com").unwrap());
        assert!(!remove(&path, "alice@example.com").unwrap());
        assert!(!remove(&dir.0.join("absent"), "alice@example.com").unwrap());
        let users = Users::load(&path).unwrap();
        assert_eq!(users.len(), 1);
        assert!(users.get("alice", "example.com").is_none());
        assert!(fs::read_to_string(&path).unwrap().ends_with("# end\n"));
        let leftovers = fs::read_dir(&dir.0).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left");
    }

    #[test]
    fn existing_mode_is_kept() {
        let dir = TempDir::new();
        let path = dir.0.join("users");
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        add(&path, "carol@10.0.0.1", "pw").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        add(&path, "dave@[2001:db8::1]", "pw").unwrap();
        let users = Users::load(&path).unwrap();
        assert!(users.get("carol", "10.0.0.1").is_some());
        assert!(users.get("dave", "[2001:db8::1]").is_some());
    }

    #[test]
    fn bad_lines_are_reported() {
        let dir = TempDir::new();
        let path = dir.0.join("users");
        let md5 = "md5:0123456789abcdef0123456789ABCDEF";
        let sha = format!("sha256:{}", "ab".repeat(32));
        let cases = [
            (
                format!("# c\n\nalice {md5} {sha}\n"),
                "line 3: not user@domain",
            ),
            (
                format!("alice@ex_ample.com {md5} {sha}"),
                "line 1: bad domain",
            ),
            (format!("@example.com {md5} {sha}"), "line 1: bad user"),
            (format!("a@example.com {md5}"), "line 1: both"),
            (
                format!("a@example.com {md5} {md5} {sha}"),
                "line 1: field 3 repeats",
            ),
            (
                format!("a@example.com {md5} hunter2"),
                "line 1: field 3 is neither",
            ),
            (
                format!("a@example.com md5:12 {sha}"),
                "line 1: field 2 is not 32",
            ),
            (
                format!("a@x.org {md5} {sha}\n#\na@X.ORG {md5} {sha}"),
                "line 3: a is listed twice",
            ),
            (
                format!("a@x.org {md5} {sha} {}", " ".repeat(MAX_LINE)),
                "line 1: longer",
            ),
        ];
        for (text, want) in cases {
            fs::write(&path, &text).unwrap();
            let err = Users::load(&path).unwrap_err();
            assert!(err.contains(want), "{err} / {want}");
            assert!(!err.contains("hunter2"));
        }
        fs::write(&path, b"# ok\n\xff\n").unwrap();
        assert!(
            Users::load(&path)
                .unwrap_err()
                .contains("line 2: not UTF-8")
        );
        assert!(
            Users::load(&dir.0.join("absent"))
                .unwrap_err()
                .contains("absent")
        );
        fs::write(&path, format!("a@x.org {sha} {md5}\r\n")).unwrap();
        let h = Users::load(&path).unwrap();
        let a = h.get("a", "x.org").unwrap();
        assert_eq!(
            a.for_algorithm(Algorithm::Md5),
            "0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn bad_aors_are_refused() {
        let dir = TempDir::new();
        let path = dir.0.join("users");
        for aor in [
            "alice",
            "@example.com",
            "alice@",
            "al ice@example.com",
            "al\u{7}ice@example.com",
            "a@b@example.com",
            "#alice@example.com",
            "alice@-example.com",
            "alice@exa mple.com",
            "alice@[::1",
            "alice@::1",
        ] {
            assert!(add(&path, aor, "pw").is_err(), "{aor:?}");
        }
        assert!(add(&path, "alice@example.com", "").is_err());
        assert!(!path.exists());
        assert!(add(&path, "alice@example.com.", "pw").is_err());
        add(&path, "Älice+1@example.com", "pw").unwrap();
        assert!(
            Users::load(&path)
                .unwrap()
                .get("Älice+1", "example.com")
                .is_some()
        );
    }
}

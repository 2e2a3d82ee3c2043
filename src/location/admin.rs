//! memcached's administrative text commands, which the memcache crate does not cover:
//! `stats` (health, restarts, the operator's status page) and `lru_crawler metadump hash`
//! (the list of keys, for refilling a node that came back empty).
//!
//! Every call has a deadline and a bound on what it reads: what comes from a node is never
//! trusted to be small.

use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The most keys one metadump pass collects from one node.
const MAX_DUMP_KEYS: usize = 5_000_000;
/// The longest line accepted from a node.
const MAX_LINE: usize = 4096;

/// Send one command and hand every answer line to `line` until `END`.
async fn command(
    addr: &str,
    cmd: &[u8],
    timeout: Duration,
    mut line: impl FnMut(String) -> Result<(), String>,
) -> Result<(), String> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.write_all(cmd).await.map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        loop {
            let l = read_line(&mut reader).await?;
            if l == "END" {
                return Ok(());
            }
            line(l)?;
        }
    })
    .await
    .map_err(|_| "timed out".to_owned())?
}

/// `get KEY`: its value as text (at most one line of `MAX_LINE`), None when absent.
pub async fn get_text(addr: &str, key: &str, timeout: Duration) -> Result<Option<String>, String> {
    if key.is_empty() || key.len() > 250 || key.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("bad key {key:?}"));
    }
    let mut value = None;
    let mut header = true;
    command(addr, format!("get {key}\r\n").as_bytes(), timeout, |line| {
        if header {
            if !line.starts_with("VALUE ") {
                return Err(format!("unexpected answer to get: {line}"));
            }
            header = false;
        } else if value.is_none() {
            value = Some(line);
        }
        Ok(())
    })
    .await?;
    Ok(value)
}

/// `stats`: name -> value.
pub async fn stats(addr: &str, timeout: Duration) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    command(addr, b"stats\r\n", timeout, |line| {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("STAT"), Some(k), Some(v)) if out.len() < 1000 => {
                out.push((k.to_owned(), v.to_owned()));
                Ok(())
            }
            (Some("STAT"), _, _) => Err("too many stats lines".into()),
            _ => Err(format!("unexpected stats line: {line}")),
        }
    })
    .await?;
    Ok(out)
}

/// Every key with `prefix` that the node holds (URL-decoded), by `lru_crawler metadump hash`:
/// a walk of the hash table. `metadump all` walks the LRUs instead, and misses items that
/// move between them during the walk: measured on memcached 1.6.18, after one `get` of each
/// of 30 keys it listed 11 of them (the hash walk, 30). A refill that missed the keys users
/// were looked up by would leave exactly the active users on one node. Servers without the
/// hash walk (before 1.6.?) answer an error: then `all`, said in the log.
pub async fn keys(addr: &str, prefix: &str, timeout: Duration) -> Result<Vec<String>, String> {
    let listed = keys_with_expiry(addr, prefix, timeout).await?;
    Ok(listed.into_iter().map(|(k, _)| k).collect())
}

/// Like [`keys`], each with its item's expiry (Unix seconds; -1: never).
pub async fn keys_with_expiry(
    addr: &str,
    prefix: &str,
    timeout: Duration,
) -> Result<Vec<(String, i64)>, String> {
    match keys_by(addr, prefix, timeout, b"lru_crawler metadump hash\r\n").await {
        Err(e) if e.starts_with("CLIENT_ERROR") || e.starts_with("ERROR") => {
            crate::throttle::throttled_warn!(node = %addr, answer = %e, "no lru_crawler metadump hash on this memcached: listing by LRU, which can miss keys");
            keys_by(addr, prefix, timeout, b"lru_crawler metadump all\r\n").await
        }
        other => other,
    }
}

async fn keys_by(
    addr: &str,
    prefix: &str,
    timeout: Duration,
    cmd: &[u8],
) -> Result<Vec<(String, i64)>, String> {
    let mut out = Vec::new();
    let mut cut = false;
    command(addr, cmd, timeout, |line| {
        if line.starts_with("ERROR") || line.starts_with("BUSY") || line.starts_with("CLIENT_ERROR")
        {
            return Err(line);
        }
        if let Some(rest) = line.strip_prefix("key=") {
            let mut fields = rest.split(' ');
            let key = url_decode(fields.next().unwrap_or_default());
            let exp = fields
                .find_map(|f| f.strip_prefix("exp="))
                .and_then(|e| e.parse().ok())
                .unwrap_or(-1);
            if key.starts_with(prefix) {
                if out.len() < MAX_DUMP_KEYS {
                    out.push((key, exp));
                } else {
                    cut = true;
                }
            }
        }
        Ok(())
    })
    .await?;
    if cut {
        // Never silently: the caller's pass is incomplete and says so.
        return Err(format!("more than {MAX_DUMP_KEYS} keys: listing cut"));
    }
    Ok(out)
}

async fn read_line(reader: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut buf = Vec::new();
    super::pipeline::read_line(reader, &mut buf, MAX_LINE as u64).await?;
    Ok(String::from_utf8_lossy(&buf).trim_end().to_owned())
}

fn url_decode(s: &str) -> String {
    String::from_utf8_lossy(&crate::sip::uri::percent_decode(s.as_bytes())).into_owned()
}

/// The value of one stat.
pub fn stat<'a>(stats: &'a [(String, String)], name: &str) -> Option<&'a str> {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(url_decode("sipfarm%3Aabc"), "sipfarm:abc");
        assert_eq!(url_decode("a%2"), "a%2");
        assert_eq!(url_decode("%é%"), "%é%");
        let s = vec![("pid".to_owned(), "12".to_owned())];
        assert_eq!(stat(&s, "pid"), Some("12"));
    }
}

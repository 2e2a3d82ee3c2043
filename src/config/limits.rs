//! The `[limits]` section: every bound on what one source or a flood may cost an instance.
//! Each key is checked against a range wide enough for any deployment, so that a typo cannot
//! turn a bound off (0) or make it meaningless.

use super::Limits;
use super::file::FileLimits;
use super::origin::Source;
use std::time::Duration;

pub(super) fn resolve(f: &FileLimits, src: Source) -> Result<Limits, String> {
    let d = Limits::default();
    let n = |v: Option<usize>, def: usize, key: &'static str, max: usize| {
        let v = v.unwrap_or(def);
        if (1..=max).contains(&v) {
            Ok(v)
        } else {
            Err(format!(
                "{}: {v} is out of range (1 to {max})",
                src.key(key)
            ))
        }
    };
    let secs = |v: Option<u64>, def: Duration, key: &'static str| {
        let v = v.unwrap_or(def.as_secs());
        if (1..=3600).contains(&v) {
            Ok(Duration::from_secs(v))
        } else {
            Err(format!(
                "{}: {v} is out of range (1 to 3600 seconds)",
                src.key(key)
            ))
        }
    };
    Ok(Limits {
        max_connections: n(
            f.max_connections,
            d.max_connections,
            "limits.max_connections",
            1 << 20,
        )?,
        max_connections_per_source: n(
            f.max_connections_per_source,
            d.max_connections_per_source,
            "limits.max_connections_per_source",
            1 << 20,
        )?,
        partial_message_timeout: secs(
            f.partial_message_timeout,
            d.partial_message_timeout,
            "limits.partial_message_timeout",
        )?,
        tcp_write_timeout: secs(
            f.tcp_write_timeout,
            d.tcp_write_timeout,
            "limits.tcp_write_timeout",
        )?,
        tcp_queue_bytes: n(
            f.tcp_queue_bytes,
            d.tcp_queue_bytes,
            "limits.tcp_queue_bytes",
            1 << 30,
        )?,
        max_in_flight: n(
            f.max_in_flight,
            d.max_in_flight,
            "limits.max_in_flight",
            1 << 20,
        )?,
        source_rate: n(
            f.source_rate.map(|r| r as usize),
            d.source_rate as usize,
            "limits.source_rate",
            1 << 24,
        )? as u32,
        max_in_flight_per_source: n(
            f.max_in_flight_per_source,
            d.max_in_flight_per_source,
            "limits.max_in_flight_per_source",
            1 << 20,
        )?,
        max_dials: n(f.max_dials, d.max_dials, "limits.max_dials", 1 << 16)?,
        max_dns_lookups: n(
            f.max_dns_lookups,
            d.max_dns_lookups,
            "limits.max_dns_lookups",
            1 << 16,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_ranges() {
        let src = Source::new("FILE");
        assert_eq!(
            resolve(&FileLimits::default(), src).unwrap(),
            Limits::default()
        );
        let f = FileLimits {
            max_in_flight: Some(0),
            ..Default::default()
        };
        assert_eq!(
            resolve(&f, src).unwrap_err(),
            "FILE: key 'limits.max_in_flight': 0 is out of range (1 to 1048576)"
        );
        let f = FileLimits {
            partial_message_timeout: Some(0),
            ..Default::default()
        };
        assert!(
            resolve(&f, src)
                .unwrap_err()
                .contains("limits.partial_message_timeout")
        );
    }
}

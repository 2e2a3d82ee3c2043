//! The order in which RFC 3263 answers are tried: NAPTR by order then preference (RFC 3403
//! 4.1, RFC 3263 4.1), SRV by priority then weight (RFC 2782), the addresses of one name
//! lowest first. RFC 2782 picks among records of one priority at random, weighted; a
//! stateless proxy must send a request, its retransmissions, its CANCEL and its ACK to the
//! same place (RFC 3261 16.11) from any instance of the farm, so the draw is replaced by a
//! fixed order that honours the weights' intent: the heaviest first, ties broken by name.

use std::net::IpAddr;

/// One SRV answer: priority, weight, port, target name.
pub(crate) type Srv = (u16, u16, u16, String);

/// SRV records in the order they are tried: lowest priority first, then highest weight,
/// then target name and port. A target of `.` (RFC 2782: the service is decidedly not
/// available at this name) is dropped.
pub(crate) fn order_srv(mut records: Vec<Srv>) -> Vec<(u16, String)> {
    records.retain(|r| !r.3.trim_end_matches('.').is_empty());
    records.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.cmp(&a.1))
            .then(a.3.cmp(&b.3))
            .then(a.2.cmp(&b.2))
    });
    records
        .into_iter()
        .map(|(_, _, port, target)| (port, target))
        .collect()
}

/// The addresses of one name in the order they are tried: IPv4 first, then the lowest, so
/// that every instance picks the same one.
pub(crate) fn order_addresses(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs() -> Vec<Srv> {
        vec![
            (20, 100, 5060, "c.example.".to_string()),
            (10, 10, 5062, "b.example.".to_string()),
            (10, 50, 5061, "a.example.".to_string()),
            (10, 50, 5063, "0.example.".to_string()),
            (5, 0, 5064, ".".to_string()),
        ]
    }

    #[test]
    fn srv_order_is_priority_then_weight_and_deterministic() {
        let want: Vec<(u16, String)> = vec![
            (5063, "0.example.".into()),
            (5061, "a.example.".into()),
            (5062, "b.example.".into()),
            (5060, "c.example.".into()),
        ];
        let mut rev = recs();
        rev.reverse();
        assert_eq!(order_srv(recs()), want, "'.' dropped, priority 10 first");
        assert_eq!(order_srv(rev), want, "whatever order the answers came in");
    }

    #[test]
    fn addresses_ipv4_first_lowest_first() {
        let ips: Vec<IpAddr> = ["::1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<String> = order_addresses(ips).iter().map(|i| i.to_string()).collect();
        assert_eq!(got, ["127.0.0.1", "127.0.0.2", "::1"]);
    }
}

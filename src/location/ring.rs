//! Ketama consistent hashing, compatible with libketama: MD5 of `"addr-k"`, four points per
//! digest, 40 digests (160 points) per node at equal weight, a key owned by the first point at
//! or after the MD5 of the key. Adding a node moves only about 1/(n+1) of the keys.
//!
//! The ring hashes node *addresses*: every instance must list the nodes identically (same
//! `host:port` spelling and weights) or they disagree on where a user lives. [`Ring::identity`]
//! is logged at start so that a mismatch is visible.

use md5::{Digest, Md5};

#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, node index), sorted by point.
    points: Vec<(u32, usize)>,
    nodes: usize,
    identity: String,
}

fn point(digest: &[u8], h: usize) -> u32 {
    u32::from(digest[3 + h * 4]) << 24
        | u32::from(digest[2 + h * 4]) << 16
        | u32::from(digest[1 + h * 4]) << 8
        | u32::from(digest[h * 4])
}

/// The ring position of a key (libketama `ketama_hashi`).
pub(crate) fn key_hash(key: &[u8]) -> u32 {
    point(&Md5::digest(key), 0)
}

impl Ring {
    /// Build from `(address, weight)` pairs, in the configured order.
    pub fn new(nodes: &[(String, u32)]) -> Ring {
        let total: u64 = nodes.iter().map(|(_, w)| u64::from((*w).max(1))).sum();
        let n = nodes.len();
        let mut points = Vec::with_capacity(n * 160);
        let mut id = Md5::new();
        for (i, (addr, weight)) in nodes.iter().enumerate() {
            id.update(format!("{addr}/{weight};").as_bytes());
            let pct = f64::from((*weight).max(1)) / total as f64;
            let digests = (pct * 40.0 * n as f64).floor() as usize;
            for k in 0..digests {
                let d = Md5::digest(format!("{addr}-{k}").as_bytes());
                for h in 0..4 {
                    points.push((point(&d, h), i));
                }
            }
        }
        points.sort_unstable();
        let identity = id.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ring {
            points,
            nodes: n,
            identity,
        }
    }

    /// A short fingerprint of the node list: equal on every instance of a healthy farm.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The owner of a key.
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        self.walk(key).next()
    }

    /// Distinct nodes in ring order from the key's position: the owner first, then the nodes
    /// that take over when it is skipped. Replicas are the first R of these.
    pub fn walk(&self, key: &[u8]) -> impl Iterator<Item = usize> + '_ {
        let h = key_hash(key);
        let start = self.points.partition_point(|(p, _)| *p < h);
        let len = self.points.len();
        let mut seen = vec![false; self.nodes];
        (0..len).filter_map(move |i| {
            let (_, node) = self.points[(start + i) % len];
            if seen[node] {
                None
            } else {
                seen[node] = true;
                Some(node)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> Ring {
        let nodes: Vec<_> = (0..n).map(|i| (format!("10.0.0.{i}:11211"), 1)).collect();
        Ring::new(&nodes)
    }

    #[test]
    fn points_per_node_and_determinism() {
        let r = ring(3);
        assert_eq!(r.points.len(), 480);
        assert_eq!(r.identity(), ring(3).identity());
        assert_ne!(r.identity(), ring(4).identity());
        for k in 0..100 {
            let key = format!("k{k}");
            assert_eq!(r.owner(key.as_bytes()), ring(3).owner(key.as_bytes()));
        }
    }

    #[test]
    fn libketama_points() {
        // libketama: the first point of "127.0.0.1:11211-0" is the little-endian u32 of the
        // first 4 bytes of its MD5 digest.
        let d = Md5::digest(b"127.0.0.1:11211-0");
        let expect = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        assert_eq!(key_hash(b"127.0.0.1:11211-0"), expect);
    }

    #[test]
    fn walk_gives_distinct_nodes() {
        let r = ring(4);
        let w: Vec<_> = r.walk(b"alice").collect();
        assert_eq!(w.len(), 4);
        let mut s = w.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn adding_a_node_moves_about_its_share() {
        for n in [2usize, 3, 5, 9] {
            let before = ring(n);
            let after = ring(n + 1);
            let keys = 20_000;
            let moved = (0..keys)
                .filter(|k| {
                    let key = format!("sipfarm:aor:{k}");
                    before.owner(key.as_bytes()) != after.owner(key.as_bytes())
                })
                .count();
            let share = moved as f64 / keys as f64;
            let ideal = 1.0 / (n as f64 + 1.0);
            assert!(
                (share - ideal).abs() < 0.05,
                "n={n}: moved {share:.3}, ideal {ideal:.3}"
            );
            // Every key that moved, moved to the new node.
            for k in 0..2000 {
                let key = format!("sipfarm:aor:{k}");
                let (b, a) = (before.owner(key.as_bytes()), after.owner(key.as_bytes()));
                assert!(a == b || a == Some(n));
            }
        }
    }

    #[test]
    fn weights_shift_share() {
        let r = Ring::new(&[("a:1".into(), 1), ("b:1".into(), 3)]);
        let b = (0..10_000)
            .filter(|k| r.owner(format!("{k}").as_bytes()) == Some(1))
            .count();
        assert!(b > 6500 && b < 8500, "{b}");
    }
}

//! Which binding of a record a contact is, in time linear in the size of the record.
//!
//! The rule is [`Binding::same_as`](super::Binding::same_as): RFC 5626 4.2 (instance-id and
//! reg-id, when both sides carry both) else RFC 3261 10.3 step 7 with the URI comparison of
//! 19.1.4. Applied pair by pair it costs two URI parses per pair, and a REGISTER or a merge
//! compares every contact with every binding: quadratic in what one message can carry.
//!
//! 19.1.4 equality is not transitive (a parameter present on one side only is ignored, so
//! `;x=1` and `;x=2` both equal the URI without it but not each other), so there is no
//! canonical key equal exactly for equal URIs. The index therefore buckets entries by what
//! every pair of equal URIs shares (scheme, userinfo, host, port as the parser canonicalises
//! them; a tel number without its visual separators) and applies the pairwise rule only
//! within a bucket, to URIs parsed once each. Answers are the pairwise rule's exactly: the
//! first entry in order that is the same binding. Within a bucket the cost stays pairwise;
//! what can share one (the same user, host and port, differing by parameters) is bounded by
//! the record's own bounds (`max_contacts`, the tombstone bound, the item size).
//!
//! A contact written exactly as the first entry (a refresh of a one-contact record, the common
//! case) is answered without parsing anything.

use sip_uri::{Uri, UriEquivalence, UriParse};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::OnceLock;

/// What identifies a binding: its contact URI, and its RFC 5626 instance-id and reg-id.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    pub uri: &'a str,
    pub instance: Option<&'a str>,
    pub reg_id: Option<u32>,
}

impl Probe<'_> {
    /// Instance-id and reg-id, when both are given (only then do they decide).
    fn flow(&self) -> Option<(&str, u32)> {
        Some((self.instance?, self.reg_id?))
    }
}

/// One entry: the URI as written and the flow, owned (the record changes while the index
/// is in use).
struct Entry {
    uri: String,
    flow: Option<(String, u32)>,
}

/// The URI buckets, built on first need: every entry's URI parsed once.
struct Buckets {
    parsed: Vec<Option<Uri>>,
    by_key: HashMap<u64, Vec<usize>>,
}

/// An index over a list of bindings (or of contacts) that answers "which entry is the same
/// binding as this one" as the pairwise rule would, kept in step as entries change.
#[derive(Default)]
pub struct Matcher {
    entries: Vec<Entry>,
    by_flow: HashMap<u64, Vec<usize>>,
    buckets: Option<Buckets>,
}

/// Keys are hashed with a per-process random key: a client cannot aim its contacts at one
/// bucket (a collision only puts two keys in one bucket; the rule itself still decides).
fn hash_of<T: Hash>(value: &T) -> u64 {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    STATE.get_or_init(RandomState::new).hash_one(value)
}

/// What every pair of URIs that `equivalent` calls equal has in common (see the module doc).
fn uri_key(parsed: Option<&Uri>, raw: &str) -> u64 {
    match parsed {
        Some(Uri::Sip(s)) => hash_of(&(
            0u8,
            s.scheme(),
            s.user(),
            s.user_params(),
            s.password(),
            s.host(),
            s.port(),
        )),
        // RFC 3966 5.1.1: visual separators do not count, case does not either.
        Some(Uri::Tel(t)) => hash_of(&(
            1u8,
            t.number().map(|n| {
                n.chars()
                    .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
                    .map(|c| c.to_ascii_lowercase())
                    .collect::<String>()
            }),
        )),
        Some(Uri::Urn(u)) => hash_of(&(2u8, u.nid(), u.nss())),
        Some(other @ Uri::Other(_)) => hash_of(&(3u8, other)),
        // Unparseable: equal to itself only (`same_contact` compares the text).
        None => hash_of(&(4u8, raw)),
    }
}

fn insert_sorted(list: &mut Vec<usize>, i: usize) {
    if let Err(at) = list.binary_search(&i) {
        list.insert(at, i);
    }
}

fn remove_sorted(map: &mut HashMap<u64, Vec<usize>>, key: u64, i: usize) {
    if let Some(list) = map.get_mut(&key) {
        if let Ok(at) = list.binary_search(&i) {
            list.remove(at);
        }
        if list.is_empty() {
            map.remove(&key);
        }
    }
}

impl Matcher {
    pub fn new<'a>(probes: impl IntoIterator<Item = Probe<'a>>) -> Matcher {
        let mut m = Matcher::default();
        for p in probes {
            m.push(p);
        }
        m
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Append an entry (it comes last in order).
    pub fn push(&mut self, p: Probe<'_>) {
        let i = self.entries.len();
        self.entries.push(Entry {
            uri: p.uri.to_owned(),
            flow: p.flow().map(|(s, r)| (s.to_owned(), r)),
        });
        if let Some(f) = p.flow() {
            insert_sorted(self.by_flow.entry(hash_of(&f)).or_default(), i);
        }
        if let Some(b) = &mut self.buckets {
            let parsed = Uri::parse(p.uri).ok();
            insert_sorted(
                b.by_key.entry(uri_key(parsed.as_ref(), p.uri)).or_default(),
                i,
            );
            b.parsed.push(parsed);
        }
    }

    /// Entry `i` becomes `p` (a binding replaced by a newer version of itself).
    pub fn replace(&mut self, i: usize, p: Probe<'_>) {
        let old_flow = self.entries[i].flow.as_ref().map(|(s, r)| (s.as_str(), *r));
        if old_flow != p.flow() {
            if let Some(f) = old_flow {
                let key = hash_of(&f);
                remove_sorted(&mut self.by_flow, key, i);
            }
            if let Some(f) = p.flow() {
                insert_sorted(self.by_flow.entry(hash_of(&f)).or_default(), i);
            }
            self.entries[i].flow = p.flow().map(|(s, r)| (s.to_owned(), r));
        }
        if self.entries[i].uri == p.uri {
            return;
        }
        if let Some(b) = &mut self.buckets {
            let old = uri_key(b.parsed[i].as_ref(), &self.entries[i].uri);
            remove_sorted(&mut b.by_key, old, i);
            let parsed = Uri::parse(p.uri).ok();
            insert_sorted(
                b.by_key.entry(uri_key(parsed.as_ref(), p.uri)).or_default(),
                i,
            );
            b.parsed[i] = parsed;
        }
        self.entries[i].uri = p.uri.to_owned();
    }

    /// The first entry that is the same binding as `p`, as `Binding::same_as` decides.
    pub fn first(&mut self, p: Probe<'_>) -> Option<usize> {
        let flow = p.flow();
        // Entries with a flow, against a probe with one, are decided by the flow alone.
        let by_flow = flow.and_then(|f| {
            let list = self.by_flow.get(&hash_of(&f))?;
            list.iter().copied().find(|i| {
                self.entries[*i]
                    .flow
                    .as_ref()
                    .is_some_and(|(s, r)| (s.as_str(), *r) == f)
            })
        });
        if by_flow == Some(0) || self.first_is_exact(p) {
            return Some(0);
        }
        if self.entries.is_empty() {
            return None;
        }
        let by_uri = self.first_by_uri(p);
        match (by_flow, by_uri) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Is the first entry decided by its URI and written exactly as `p`'s?
    fn first_is_exact(&self, p: Probe<'_>) -> bool {
        self.entries
            .first()
            .is_some_and(|e| !(e.flow.is_some() && p.flow().is_some()) && e.uri == p.uri)
    }

    fn first_by_uri(&mut self, p: Probe<'_>) -> Option<usize> {
        let buckets = self.buckets.get_or_insert_with(|| {
            let parsed: Vec<Option<Uri>> = self
                .entries
                .iter()
                .map(|e| Uri::parse(&e.uri).ok())
                .collect();
            let mut by_key: HashMap<u64, Vec<usize>> = HashMap::new();
            for (i, (e, u)) in self.entries.iter().zip(&parsed).enumerate() {
                by_key
                    .entry(uri_key(u.as_ref(), &e.uri))
                    .or_default()
                    .push(i);
            }
            Buckets { parsed, by_key }
        });
        let mine = Uri::parse(p.uri).ok();
        let list = buckets.by_key.get(&uri_key(mine.as_ref(), p.uri))?;
        let flow = p.flow().is_some();
        list.iter().copied().find(|i| {
            let e = &self.entries[*i];
            if flow && e.flow.is_some() {
                return false;
            }
            // `same_contact`: the same text, or both parse and are equivalent.
            e.uri == p.uri
                || matches!((&buckets.parsed[*i], &mine), (Some(a), Some(b)) if a.equivalent(b))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Binding;
    use crate::sip::uri::same_contact;

    /// RFC 3261 19.1.4's examples (equal, then not equal), and the other components it names.
    const PAIRS: &[(&str, &str, bool)] = &[
        (
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp",
            true,
        ),
        (
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;newparam=5",
            true,
        ),
        (
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;security=on",
            true,
        ),
        (
            "sip:carol@chicago.com;newparam=5",
            "sip:carol@chicago.com;security=on",
            true,
        ),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            true,
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            true,
        ),
        (
            "SIP:ALICE@AtLanTa.CoM;Transport=udp",
            "sip:alice@AtLanTa.CoM;Transport=UDP",
            false,
        ),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060", false),
        (
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com;transport=udp",
            false,
        ),
        (
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com:6000;transport=tcp",
            false,
        ),
        (
            "sip:carol@chicago.com",
            "sip:carol@chicago.com?Subject=next%20meeting",
            false,
        ),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4", false),
        (
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;security=off",
            false,
        ),
        ("sips:alice@atlanta.com", "sip:alice@atlanta.com", false),
        ("sip:alice:pw@atlanta.com", "sip:alice@atlanta.com", false),
        ("sip:Bob@h", "sip:bob@h", false),
        ("sip:a@[2001:db8::1]:5070", "sip:a@[2001:DB8::1]:5070", true),
        ("sip:+1234@gw;user=phone", "sip:+1234@gw", false),
        ("sip:a@h;maddr=10.0.0.1", "sip:a@h;MADDR=10.0.0.1", true),
        ("sip:a@h;ttl=5", "sip:a@h", false),
        ("sip:a@h;method=INVITE", "sip:a@h;method=invite", true),
        ("sip:a@h;lr", "sip:a@h", true),
        ("sip:a@h:5070", "sip:a@h:05070", true),
        ("tel:+1-201-555-0123", "tel:+12015550123", true),
        ("tel:+12015550123", "tel:+12015550124", false),
        (
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "URN:UUID:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            true,
        ),
        ("mailto:a@h", "mailto:a@h", true),
        ("sip:", "sip:", true),
        ("sip:", "sip:a@h", false),
    ];

    fn binding(p: Probe<'_>) -> Binding {
        Binding {
            contact: p.uri.into(),
            params: String::new(),
            expires_at: 1,
            q: None,
            call_id: String::new(),
            cseq: 0,
            path: vec![],
            source: String::new(),
            instance_id: p.instance.map(str::to_owned),
            reg_id: p.reg_id,
            updated: 0,
            removed: false,
            flow: None,
        }
    }

    fn uri(u: &str) -> Probe<'_> {
        Probe {
            uri: u,
            instance: None,
            reg_id: None,
        }
    }

    /// The pairwise rule: the first binding that `same_as` calls the same.
    fn pairwise(bindings: &[Binding], p: Probe<'_>) -> Option<usize> {
        bindings
            .iter()
            .position(|b| b.same_as(p.uri, p.instance, p.reg_id))
    }

    #[test]
    fn rfc3261_pairs_as_the_pairwise_rule() {
        for &(a, b, equal) in PAIRS {
            assert_eq!(same_contact(a, b), equal, "{a} / {b}");
            assert_eq!(same_contact(b, a), equal, "{b} / {a}");
            // Alone (the shortcut on the first entry), and behind another entry (the buckets).
            for list in [vec![a], vec!["sip:other@x", a], vec![a, "sip:other@x"]] {
                let bindings: Vec<Binding> = list.iter().map(|u| binding(uri(u))).collect();
                let mut m = Matcher::new(list.iter().map(|u| uri(u)));
                assert_eq!(
                    m.first(uri(b)),
                    pairwise(&bindings, uri(b)),
                    "{list:?} / {b}"
                );
            }
        }
    }

    #[test]
    fn flows_decide_when_both_sides_have_one() {
        let flow = |u, i, r| Probe {
            uri: u,
            instance: Some(i),
            reg_id: Some(r),
        };
        let list = [
            uri("sip:a@h"),
            flow("sip:b@h", "<urn:uuid:1>", 1),
            flow("sip:a@h", "<urn:uuid:2>", 1),
        ];
        let bindings: Vec<Binding> = list.iter().map(|p| binding(*p)).collect();
        let mut m = Matcher::new(list);
        for p in [
            flow("sip:zz@h", "<urn:uuid:1>", 1),
            flow("sip:a@h", "<urn:uuid:2>", 1),
            flow("sip:a@h", "<urn:uuid:3>", 1),
            flow("sip:b@h", "<urn:uuid:1>", 2),
            uri("sip:b@h"),
            Probe {
                uri: "sip:b@h",
                instance: Some("<urn:uuid:1>"),
                reg_id: None,
            },
        ] {
            assert_eq!(m.first(p), pairwise(&bindings, p), "{p:?}");
        }
    }

    /// Random lists, replacements and probes from the URIs above, with and without flows:
    /// the index answers as the pairwise rule after every change.
    #[test]
    fn random_changes_match_the_pairwise_rule() {
        let uris: Vec<&str> = PAIRS.iter().flat_map(|(a, b, _)| [*a, *b]).collect();
        let instances = [None, Some("<urn:uuid:1>"), Some("<urn:uuid:2>")];
        let mut seed = 0x2545_f491_u32;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize % n
        };
        for _ in 0..300 {
            let mut bindings: Vec<Binding> = Vec::new();
            let mut m = Matcher::default();
            for _ in 0..12 {
                let p = Probe {
                    uri: uris[next(uris.len())],
                    instance: instances[next(3)],
                    reg_id: [None, Some(1)][next(2)],
                };
                let want = pairwise(&bindings, p);
                assert_eq!(m.first(p), want, "{p:?} in {bindings:?}");
                match want {
                    Some(i) if next(2) == 0 => {
                        bindings[i] = binding(p);
                        m.replace(i, p);
                    }
                    Some(_) => {}
                    None => {
                        bindings.push(binding(p));
                        m.push(p);
                    }
                }
                // Sometimes a list that holds two entries the rule calls the same.
                if next(4) == 0 {
                    bindings.push(binding(p));
                    m.push(p);
                }
            }
            assert_eq!(m.len(), bindings.len());
        }
    }
}

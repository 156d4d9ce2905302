//! Legacy keys that no `[[integrations]]` entry knows, so an operator can find the forgotten
//! integrations still calling with an API key before the keys are revoked.
//!
//! A key is known here only by its SHA-256 (the key itself is never stored): the digest, its
//! first 12 hex digits as a short fingerprint, the routes it used, its responses by status
//! class, when it was first and last seen, and its last few source addresses and `User-Agent`
//! values. At most [`MAX_KEYS`] keys are kept; a new key beyond that evicts the least recently
//! seen one, and the eviction is counted, so a flood of random keys costs bounded memory and
//! says that it happened.
//!
//! Only requests with an unknown key come here (one small mutex each); known callers never do.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::report::{classes, joined_or_dash, rfc3339, text_list};
use super::{lock, secs};
use crate::state::ledger::KeyRecord;

pub use crate::state::ledger::{MAX_KEYS, RECENT};
/// A longer `User-Agent` is cut: it is a hint for a human, not evidence.
const MAX_USER_AGENT: usize = 200;
/// Hex digits of the digest shown as the short fingerprint.
pub const FINGERPRINT_LEN: usize = 12;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The first [`FINGERPRINT_LEN`] hex digits of `digest`, without allocating (the access log
/// writes it).
pub fn fingerprint(digest: &[u8; 32]) -> [u8; FINGERPRINT_LEN] {
    let mut out = [0; FINGERPRINT_LEN];
    for (i, b) in digest.iter().take(FINGERPRINT_LEN / 2).enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// `digest` in lower-case hex, as `key_sha256` is written.
pub fn hex(digest: &[u8; 32]) -> String {
    digest
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

/// One request with an unknown key, as recorded.
pub struct Sighting<'a> {
    /// SHA-256 of the key sent.
    pub digest: &'a [u8; 32],
    /// The matched route prefix.
    pub route: &'a str,
    /// Final status.
    pub status: u16,
    /// The peer's address.
    pub peer: IpAddr,
    /// Its `User-Agent`, if any.
    pub user_agent: Option<&'a [u8]>,
    /// When.
    pub at: SystemTime,
}

#[derive(Debug)]
struct KeySeen {
    /// Requests per route prefix.
    routes: BTreeMap<String, u64>,
    by_class: [u64; 5],
    first_seen: SystemTime,
    last_seen: SystemTime,
    /// Order of last use, for eviction (wall-clock times can tie or step back).
    tick: u64,
    /// Most recent first, distinct.
    addresses: VecDeque<IpAddr>,
    /// Most recent first, distinct.
    user_agents: VecDeque<String>,
}

/// Moves `v` to the front of `list`, keeping at most [`RECENT`] distinct values.
fn remember<T: PartialEq>(list: &mut VecDeque<T>, v: T) {
    if let Some(i) = list.iter().position(|x| *x == v) {
        list.remove(i);
    }
    list.push_front(v);
    list.truncate(RECENT);
}

/// A `User-Agent` as printable text: cut, and anything but printable ASCII replaced, so it
/// cannot move a terminal's cursor when `report` prints it.
fn user_agent_text(raw: &[u8]) -> String {
    raw.iter()
        .take(MAX_USER_AGENT)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<[u8; 32], KeySeen>,
    tick: u64,
    evicted: u64,
}

/// The unknown keys seen by this process (in memory: a restart starts again).
#[derive(Debug, Default)]
pub struct Discovered {
    inner: Mutex<Inner>,
}

impl Discovered {
    /// Records one request with an unknown key.
    pub fn record(&self, s: &Sighting<'_>) {
        let mut inner = lock(&self.inner);
        inner.tick += 1;
        let tick = inner.tick;
        if !inner.keys.contains_key(s.digest) && inner.keys.len() >= MAX_KEYS {
            // A linear scan, only when a new key arrives with the table full: 1,000 entries
            // are cheaper to scan than an ordered index is to keep up on every request.
            if let Some(oldest) = inner
                .keys
                .iter()
                .min_by_key(|(_, k)| k.tick)
                .map(|(d, _)| *d)
            {
                inner.keys.remove(&oldest);
                inner.evicted += 1;
            }
        }
        let seen = inner.keys.entry(*s.digest).or_insert_with(|| KeySeen {
            routes: BTreeMap::new(),
            by_class: [0; 5],
            first_seen: s.at,
            last_seen: s.at,
            tick,
            addresses: VecDeque::with_capacity(RECENT + 1),
            user_agents: VecDeque::with_capacity(RECENT + 1),
        });
        seen.tick = tick;
        seen.last_seen = seen.last_seen.max(s.at);
        seen.by_class[usize::from(s.status / 100).clamp(1, 5) - 1] += 1;
        if let Some(n) = seen.routes.get_mut(s.route) {
            *n += 1;
        } else {
            seen.routes.insert(s.route.to_owned(), 1);
        }
        remember(&mut seen.addresses, s.peer);
        if let Some(ua) = s.user_agent {
            remember(&mut seen.user_agents, user_agent_text(ua));
        }
    }

    /// Keys dropped to stay within [`MAX_KEYS`].
    pub fn evicted(&self) -> u64 {
        lock(&self.inner).evicted
    }

    /// Every key as the ledger records it (the counts since this process started).
    pub fn records(&self) -> BTreeMap<String, KeyRecord> {
        let inner = lock(&self.inner);
        inner
            .keys
            .iter()
            .map(|(digest, k)| {
                let record = KeyRecord {
                    routes: k.routes.clone(),
                    by_class: k.by_class,
                    first_seen: secs(k.first_seen),
                    last_seen: secs(k.last_seen),
                    addresses: k.addresses.iter().map(IpAddr::to_string).collect(),
                    user_agents: k.user_agents.iter().cloned().collect(),
                };
                (hex(digest), record)
            })
            .collect()
    }
}

/// The `discovered_keys` list of `/status` from the ledger's keys, most recently seen first,
/// leaving out keys an integration has since been configured with (`known`, hex digests).
pub fn report(keys: &BTreeMap<String, KeyRecord>, known: &[String]) -> Value {
    let mut keys: Vec<(&String, &KeyRecord)> = keys
        .iter()
        .filter(|(hex, _)| !known.contains(hex))
        .collect();
    keys.sort_by_key(|(_, k)| std::cmp::Reverse(k.last_seen));
    keys.into_iter()
        .map(|(hex, k)| {
            let fp = &hex[..FINGERPRINT_LEN.min(hex.len())];
            let routes: Vec<&str> = k.routes.keys().map(String::as_str).collect();
            json!({
                "fingerprint": fp,
                "key_sha256": hex,
                "routes": routes,
                "requests_by_route": k.routes,
                "requests": classes(&k.by_class),
                "first_seen": rfc3339(k.first_seen),
                "last_seen": rfc3339(k.last_seen),
                "addresses": k.addresses,
                "user_agents": k.user_agents,
                "stanza": stanza(fp, hex, &routes),
            })
        })
        .collect()
}

/// The `[[integrations]]` entry that would recognise the key, ready to paste into
/// `proxy.toml` (then renamed).
fn stanza(fingerprint: &str, hex: &str, routes: &[&str]) -> String {
    // A JSON string is a valid TOML basic string (same quotes and escapes).
    let routes: Vec<String> = routes.iter().map(|r| Value::from(*r).to_string()).collect();
    format!(
        "[[integrations]]\nname = \"unknown-{fingerprint}\"\nkey_sha256 = \"{hex}\"\nroutes = [{}]\n",
        routes.join(", ")
    )
}

/// The report's section on unknown keys, from a `/status` document; nothing when the gateway
/// answering is too old to have one.
pub fn render_text(status: &Value, out: &mut String) {
    let Some(keys) = status["discovered_keys"].as_array() else {
        return;
    };
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    out.push_str("\nUNRECOGNISED API KEYS (sent by callers no [[integrations]] entry knows)\n");
    if keys.is_empty() {
        out.push_str("  (none seen)\n");
    }
    let list = text_list;
    for k in keys {
        let req = &k["requests"];
        let _ = writeln!(
            out,
            "  key {}  2xx {} 3xx {} 4xx {} 5xx {}  first {}  last {}",
            s(&k["fingerprint"]),
            req["2xx"],
            req["3xx"],
            req["4xx"],
            req["5xx"],
            s(&k["first_seen"]),
            s(&k["last_seen"]),
        );
        let _ = writeln!(out, "    routes:      {}", list(&k["routes"]));
        let _ = writeln!(out, "    addresses:   {}", list(&k["addresses"]));
        let agents: Vec<String> = k["user_agents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{a}"))
            .collect();
        let _ = writeln!(out, "    user agents: {}", joined_or_dash(&agents, " "));
        out.push_str("    to recognise it, add to proxy.toml:\n");
        for line in s(&k["stanza"]).lines() {
            let _ = writeln!(out, "      {line}");
        }
    }
    let evicted = status["discovered_keys_evicted"].as_u64().unwrap_or(0);
    if evicted > 0 {
        let _ = writeln!(
            out,
            "  ({evicted} more key(s) were dropped: only the {MAX_KEYS} most recently seen are kept)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::time::Duration;

    fn digest(n: usize) -> [u8; 32] {
        Sha256::digest(n.to_string().as_bytes()).into()
    }

    fn sight(d: &[u8; 32], at: u64) -> Sighting<'_> {
        Sighting {
            digest: d,
            route: "/prod",
            status: 200,
            peer: "10.0.0.1".parse().unwrap(),
            user_agent: None,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(at),
        }
    }

    fn hexes(d: &Discovered) -> Vec<String> {
        report(&d.records(), &[])
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key_sha256"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_bound_evicts_the_least_recently_seen() {
        let d = Discovered::default();
        for n in 0..MAX_KEYS {
            d.record(&sight(&digest(n), 1));
        }
        // Key 0 is seen again: key 1 is now the least recently seen.
        d.record(&sight(&digest(0), 1));
        assert_eq!(d.evicted(), 0);
        d.record(&sight(&digest(MAX_KEYS), 2));
        assert_eq!(d.evicted(), 1);
        let kept = hexes(&d);
        assert_eq!(kept.len(), MAX_KEYS);
        assert!(!kept.contains(&hex(&digest(1))), "key 1 was the oldest");
        assert!(kept.contains(&hex(&digest(0))), "key 0 was seen again");
        assert_eq!(kept[0], hex(&digest(MAX_KEYS)), "newest first");
        d.record(&sight(&digest(MAX_KEYS + 1), 3));
        assert!(!hexes(&d).contains(&hex(&digest(2))));
        assert_eq!(d.evicted(), 2);
    }

    #[test]
    fn a_key_keeps_its_routes_classes_and_last_few_sources() {
        let d = Discovered::default();
        let k = digest(7);
        for (i, (route, status, ip, ua)) in [
            ("/prod", 200, "10.0.0.1", "a"),
            ("/test", 404, "10.0.0.2", "b\u{1b}[2J"),
            ("/prod", 503, "10.0.0.3", "a"),
            ("/prod", 200, "10.0.0.4", "c"),
            ("/prod", 200, "10.0.0.2", "d"),
        ]
        .into_iter()
        .enumerate()
        {
            d.record(&Sighting {
                route,
                status,
                peer: ip.parse().unwrap(),
                user_agent: Some(ua.as_bytes()),
                ..sight(&k, 10 + i as u64)
            });
        }
        let r = &report(&d.records(), &[])[0];
        let h = hex(&k);
        assert_eq!(r["key_sha256"], h);
        assert_eq!(r["fingerprint"], h[..12]);
        assert_eq!(r["routes"], json!(["/prod", "/test"]));
        assert_eq!(r["requests_by_route"], json!({"/prod": 4, "/test": 1}));
        assert_eq!(
            r["requests"],
            json!({"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 1})
        );
        assert_eq!(r["first_seen"], "1970-01-01T00:00:10Z");
        assert_eq!(r["last_seen"], "1970-01-01T00:00:14Z");
        assert_eq!(r["addresses"], json!(["10.0.0.2", "10.0.0.4", "10.0.0.3"]));
        assert_eq!(r["user_agents"], json!(["d", "c", "a"]));
        assert_eq!(
            r["stanza"],
            format!(
                "[[integrations]]\nname = \"unknown-{}\"\nkey_sha256 = \"{h}\"\nroutes = [\"/prod\", \"/test\"]\n",
                &h[..12]
            )
        );
        // The stanza is a valid integrations entry.
        let parsed: toml::Table = toml::from_str(r["stanza"].as_str().unwrap()).unwrap();
        assert_eq!(parsed["integrations"][0]["key_sha256"].as_str(), Some(&*h));
        assert_eq!(&fingerprint(&k), &h.as_bytes()[..12]);
        assert_eq!(user_agent_text(b"b\x1b[2J"), "b?[2J");
    }

    #[test]
    fn report_text_lists_keys_with_their_stanza() {
        let d = Discovered::default();
        d.record(&sight(&digest(1), 5));
        let status =
            json!({"discovered_keys": report(&d.records(), &[]), "discovered_keys_evicted": 4});
        assert_eq!(
            report(&d.records(), &[hex(&digest(1))]),
            json!([]),
            "a configured key is no longer unrecognised"
        );
        let mut out = String::new();
        render_text(&status, &mut out);
        let h = hex(&digest(1));
        assert!(out.contains(&format!("key {}  2xx 1", &h[..12])), "{out}");
        assert!(
            out.contains(&format!("      key_sha256 = \"{h}\"")),
            "{out}"
        );
        assert!(out.contains("4 more key(s) were dropped"), "{out}");
        let mut old = String::new();
        render_text(&json!({}), &mut old);
        assert!(old.is_empty());
    }
}

//! Domain layer: the audit trail's hash chain (CONTRACT 12.2): the canonical form of an event,
//! how one link is computed, and the walk that verifies a chain. Pure: the store fetches and
//! writes rows, this module decides what they mean. docs/SECURITY.md defines the same form.
//!
//! `hash(seq) = SHA-256(hash(seq - 1) || canonical(seq, event))`, as 64 lowercase hex digits;
//! the hash before the first event ever sealed is `GENESIS` (32 zero bytes).

use sha2::{Digest, Sha256};

use super::entities::AuditEvent;

/// The hash before the first sealed event: 32 zero bytes, in hex.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The tag every canonical form starts with (a later format gets another tag).
const FORMAT_TAG: &[u8] = b"authd-audit-v1";

/// What the chain-head row (`audit_chain`) records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    /// The seq of the last event deleted by `audit.retention` (0: none was): the first
    /// remaining event is `base_seq + 1`.
    pub base_seq: i64,
    /// The hash of that deleted event (`GENESIS` when none was): the first remaining event
    /// links to it.
    pub base_hash: String,
    /// The seq of the newest sealed event (equal to `base_seq` when none is left).
    pub head_seq: i64,
    /// Its hash.
    pub head_hash: String,
}

/// A sealed row of the audit trail as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEvent {
    pub seq: i64,
    /// As stored: `None` if a row holds a seq without a hash (tampered).
    pub hash: Option<String>,
    pub event: AuditEvent,
}

/// An audit event with its place in the chain, if sealed (`seq` and `hash` are `None` until
/// a server seals it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub event: AuditEvent,
    pub seq: Option<i64>,
    pub hash: Option<String>,
}

/// The canonical form of an event at `seq`: `FORMAT_TAG`, then each field in this order:
/// seq, at, event, user_id, email, ip, user_agent, outcome, reason, actor. A field is the
/// byte 0x00 when NULL, else the byte 0x01, its length in bytes as 8 bytes big-endian and its
/// UTF-8 bytes; integers are written in decimal, a user id as its lowercase hyphenated UUID.
/// The length prefix makes the encoding injective: no two different events share a form.
pub fn canonical(seq: i64, e: &AuditEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(FORMAT_TAG);
    let fields: [Option<String>; 10] = [
        Some(seq.to_string()),
        Some(e.at.to_string()),
        Some(e.event.clone()),
        e.user_id.map(|u| u.hyphenated().to_string()),
        e.email.clone(),
        e.ip.clone(),
        e.user_agent.clone(),
        Some(e.outcome.clone()),
        e.reason.clone(),
        e.actor.clone(),
    ];
    for field in &fields {
        match field {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&(s.len() as u64).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out
}

/// The hash of the event at `seq` following `prev` (hex); `None` when `prev` is not 64 hex
/// digits.
pub fn link(prev: &str, seq: i64, e: &AuditEvent) -> Option<String> {
    let prev = decode_hex(prev)?;
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical(seq, e));
    Some(encode_hex(&h.finalize()))
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Seals `rows` (unsealed events in insertion order, each with its row id) after the head
/// `head_seq`/`head_hash`: returns each row's id with its new seq and hash, in order. `None`
/// when the head hash is malformed (the chain-head row was tampered with: nothing is sealed).
pub fn seal(
    head_seq: i64,
    head_hash: &str,
    rows: &[(i64, AuditEvent)],
) -> Option<Vec<(i64, i64, String)>> {
    let mut prev = head_hash.to_string();
    let mut out = Vec::with_capacity(rows.len());
    for (i, (id, event)) in rows.iter().enumerate() {
        let seq = head_seq + 1 + i as i64;
        let hash = link(&prev, seq, event)?;
        out.push((*id, seq, hash.clone()));
        prev = hash;
    }
    Some(out)
}

/// The most unsealed events one sealing transaction takes (a short transaction: the rest go
/// in the next one).
pub const SEAL_BATCH: usize = 500;

/// An earlier head kept elsewhere (`--anchor SEQ:HASH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
}

impl std::str::FromStr for Anchor {
    type Err = String;

    /// `SEQ:HASH`, as `authd audit head` prints it.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not SEQ:HASH (as `authd audit head` prints it)");
        let (seq, hash) = s.split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        let hash = hash.to_ascii_lowercase();
        if seq < 0 || decode_hex(&hash).is_none() {
            return Err(bad());
        }
        Ok(Anchor { seq, hash })
    }
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every sealed event is where it should be and matches its hash.
    Ok {
        /// Sealed events walked.
        sealed: u64,
        /// The oldest seq still kept (the head's seq + 1 when none is kept).
        first_seq: i64,
        head_seq: i64,
        head_hash: String,
    },
    /// The first event whose content, order or presence does not match.
    Broken { seq: i64, why: String },
}

/// Walks sealed events in seq order (feed each to `visit`), then `finish`.
#[derive(Debug)]
pub struct Walk {
    state: ChainState,
    expected: i64,
    prev: String,
    sealed: u64,
    /// The hashes seen at the anchor's seq, if it is walked.
    anchor: Option<Anchor>,
    anchor_seen: Option<String>,
    broken: Option<(i64, String)>,
}

impl Walk {
    pub fn new(state: ChainState, anchor: Option<Anchor>) -> Self {
        let mut broken = None;
        if decode_hex(&state.base_hash).is_none() {
            broken = Some((
                state.base_seq + 1,
                "the chain-head row's base hash is malformed".to_string(),
            ));
        }
        Walk {
            expected: state.base_seq + 1,
            prev: state.base_hash.clone(),
            state,
            sealed: 0,
            anchor,
            anchor_seen: None,
            broken,
        }
    }

    /// Checks the next sealed event; false once the chain is broken (stop feeding).
    pub fn visit(&mut self, row: &ChainedEvent) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let why = if row.seq < self.expected {
            Some((
                row.seq,
                "event out of order (seq repeats or goes back)".to_string(),
            ))
        } else if row.seq > self.expected {
            Some((self.expected, "event missing".to_string()))
        } else {
            match (&row.hash, link(&self.prev, row.seq, &row.event)) {
                (Some(stored), Some(computed)) if *stored == computed => None,
                (None, _) => Some((row.seq, "sealed event has no hash".to_string())),
                _ => Some((
                    row.seq,
                    "content or order does not match its hash".to_string(),
                )),
            }
        };
        if let Some(b) = why {
            self.broken = Some(b);
            return false;
        }
        let hash = row.hash.clone().unwrap_or_default();
        if self.anchor.as_ref().is_some_and(|a| a.seq == row.seq) {
            self.anchor_seen = Some(hash.clone());
        }
        self.prev = hash;
        self.expected += 1;
        self.sealed += 1;
        true
    }

    /// The verdict after the last sealed event.
    pub fn finish(self) -> Verdict {
        if let Some((seq, why)) = self.broken {
            return Verdict::Broken { seq, why };
        }
        let last = self.expected - 1;
        let s = &self.state;
        if last < s.head_seq {
            return Verdict::Broken {
                seq: last + 1,
                why: format!("event missing (the chain head is seq {})", s.head_seq),
            };
        }
        if last > s.head_seq {
            return Verdict::Broken {
                seq: s.head_seq + 1,
                why: "event beyond the recorded chain head".to_string(),
            };
        }
        if self.prev != s.head_hash {
            return Verdict::Broken {
                seq: last,
                why: "hash differs from the recorded chain head".to_string(),
            };
        }
        if let Some(a) = &self.anchor {
            let held = if a.seq == s.base_seq {
                Some(s.base_hash.clone())
            } else {
                self.anchor_seen.clone()
            };
            if a.seq > s.head_seq {
                return Verdict::Broken {
                    seq: s.head_seq + 1,
                    why: format!(
                        "the anchor seq {} is beyond the chain head: history was truncated",
                        a.seq
                    ),
                };
            }
            match held {
                Some(h) if h == a.hash => {}
                Some(_) => {
                    return Verdict::Broken {
                        seq: a.seq,
                        why: "hash differs from the anchor: history was rewritten".to_string(),
                    }
                }
                None => {
                    return Verdict::Broken {
                        seq: a.seq,
                        why: format!(
                            "the anchor is older than the oldest kept event (seq {}): it cannot \
                             be checked",
                            s.base_seq + 1
                        ),
                    }
                }
            }
        }
        Verdict::Ok {
            sealed: self.sealed,
            first_seq: s.base_seq + 1,
            head_seq: s.head_seq,
            head_hash: s.head_hash.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            at: 1_700_000_000_000 + n,
            event: "login".into(),
            user_id: None,
            email: Some(format!("u{n}@x.io")),
            ip: Some("127.0.0.1".into()),
            user_agent: None,
            outcome: "success".into(),
            reason: None,
            actor: None,
        }
    }

    fn chain(n: i64) -> (ChainState, Vec<ChainedEvent>) {
        let mut prev = GENESIS.to_string();
        let mut rows = Vec::new();
        for seq in 1..=n {
            let hash = link(&prev, seq, &event(seq)).unwrap();
            rows.push(ChainedEvent {
                seq,
                hash: Some(hash.clone()),
                event: event(seq),
            });
            prev = hash;
        }
        let state = ChainState {
            base_seq: 0,
            base_hash: GENESIS.into(),
            head_seq: n,
            head_hash: prev,
        };
        (state, rows)
    }

    fn verdict(state: ChainState, rows: &[ChainedEvent], anchor: Option<Anchor>) -> Verdict {
        let mut w = Walk::new(state, anchor);
        for r in rows {
            if !w.visit(r) {
                break;
            }
        }
        w.finish()
    }

    #[test]
    fn the_encoding_separates_fields() {
        let mut a = event(1);
        let mut b = event(1);
        a.email = Some("ab".into());
        a.ip = Some("c".into());
        b.email = Some("a".into());
        b.ip = Some("bc".into());
        assert_ne!(canonical(1, &a), canonical(1, &b));
        b.email = None;
        a.email = Some(String::new());
        assert_ne!(canonical(1, &a), canonical(1, &b));
    }

    #[test]
    fn a_whole_chain_verifies_and_tampering_breaks_it() {
        let (state, rows) = chain(5);
        assert!(matches!(
            verdict(state.clone(), &rows, None),
            Verdict::Ok { sealed: 5, .. }
        ));
        let mut edited = rows.clone();
        edited[2].event.ip = Some("10.0.0.1".into());
        assert_eq!(
            verdict(state.clone(), &edited, None),
            Verdict::Broken {
                seq: 3,
                why: "content or order does not match its hash".into()
            }
        );
        let mut gap = rows.clone();
        gap.remove(1);
        assert!(matches!(
            verdict(state.clone(), &gap, None),
            Verdict::Broken { seq: 2, .. }
        ));
        assert!(matches!(
            verdict(state.clone(), &rows[..4], None),
            Verdict::Broken { seq: 5, .. }
        ));
        let anchor = Anchor {
            seq: 3,
            hash: rows[2].hash.clone().unwrap(),
        };
        assert!(matches!(
            verdict(state.clone(), &rows, Some(anchor.clone())),
            Verdict::Ok { .. }
        ));
        let (short_state, short) = chain(2);
        assert!(matches!(
            verdict(short_state, &short, Some(anchor)),
            Verdict::Broken { seq: 3, .. }
        ));
    }

    #[test]
    fn anchors_parse() {
        let a: Anchor = format!("7:{}", "Ab".repeat(32)).parse().unwrap();
        assert_eq!(a.seq, 7);
        assert_eq!(a.hash, "ab".repeat(32));
        assert!("7".parse::<Anchor>().is_err());
        assert!("x:00".parse::<Anchor>().is_err());
    }
}

//! A persistent session as one value of the sessions bucket: who owns it, which incarnation
//! it is, its record (expiry, away-since, subscriptions with the log sequence each was made
//! at) and its protocol state with its place in the message log — one value, so one
//! compare-and-set writes them together and a crash can never keep one without the other.
//!
//! Layout (version 2), integers big-endian, strings u32-length-prefixed:
//! `0x02 | session id u64 | epoch u64 | owner u8-length + bytes (0: away) | owner's boot
//! u64 | client id |
//! expiry u32 | away-since ms u64 (0: connected) | subscriptions u32 × (filter | flags u8:
//! QoS bits 0-1, 4 No Local, 8 Retain As Published, 16 has id, 32 has since | [id u32] |
//! [since u64]) |
//! next packet id u16 | outgoing u32 × (pkid u16 | flags u8: 1 PUBREL sent | seq u64) |
//! inbound QoS 2 u32 × u16 | position u64 | done u32 × u64 | sent QoS u32 × (pkid u16 |
//! QoS u8)`. Every log sequence in it (a subscription's since, an exchange's seq, the
//! position and the done ones) is a position ([`super::super::position`]); version 1,
//! written before the log carried batches, counted log messages and is read as such.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::durable::Seq;
use crate::model::QoS;
use crate::store::cursor::Cursor;
use crate::store::session::{
    LogPosition, SessionRecord, StoredInflight, StoredState, StoredSubscription,
};

use super::super::{mapping, position};

/// The record's version byte.
const VERSION: u8 = 2;
/// The version whose log sequences count log messages, not positions.
const VERSION_MESSAGES: u8 = 1;
/// How a log sequence read from a record becomes a position.
type Convert = fn(u64) -> u64;
/// Longest key made from a client id before it is hashed instead (MQTT client ids reach
/// 65,535 bytes; NATS subjects should stay well under its 4 KiB control line).
const MAX_KEY: usize = 512;

/// One session as kept in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The client id (whole, also when the key is a hash of it).
    pub client: String,
    /// This incarnation of the session: a new one for each clean start or expiry, so a
    /// delayed will can tell its own session resumed from a new one.
    pub session_id: u64,
    /// How many connections have owned this incarnation.
    pub epoch: u64,
    /// The node whose connection owns it; `None` while its client is away.
    pub owner: Option<String>,
    /// Which run of the owner node (a random number per process start): a node that
    /// restarted under the same name no longer has the session.
    pub boot: u64,
    /// Expiry, away-since, subscriptions.
    pub record: SessionRecord,
    /// Exchanges, inbound QoS 2 ids, next packet id, place in the log.
    pub state: StoredState,
}

/// Why a value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed ponte session record: {0}")]
pub struct RecordError(&'static str);

impl From<&'static str> for RecordError {
    fn from(why: &'static str) -> Self {
        RecordError(why)
    }
}

/// The bucket key of `client`'s session: its escaped form, or `_h` and the SHA-256 of a
/// long one (no escaped id starts so: `_` is always followed by two upper-case hex digits).
pub fn key(client: &str) -> String {
    let mut k = String::with_capacity(client.len() + 8);
    mapping::encode_level(client, &mut k);
    if k.len() <= MAX_KEY {
        return k;
    }
    let digest = Sha256::digest(client.as_bytes());
    let mut k = String::from("_h");
    for b in digest {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        .max(1)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Kept {
    /// The encoded value.
    pub fn encode(&self) -> Vec<u8> {
        let r = &self.record;
        let s = &self.state;
        let mut out = Vec::with_capacity(96 + self.client.len() + r.subscriptions.len() * 32);
        out.push(VERSION);
        out.extend_from_slice(&self.session_id.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        let owner = self.owner.as_deref().unwrap_or("");
        out.push(owner.len().min(255) as u8);
        out.extend_from_slice(&owner.as_bytes()[..owner.len().min(255)]);
        out.extend_from_slice(&self.boot.to_be_bytes());
        put_str(&mut out, &self.client);
        out.extend_from_slice(&r.expiry.to_be_bytes());
        out.extend_from_slice(&r.away_since.map_or(0, ms).to_be_bytes());
        out.extend_from_slice(&(r.subscriptions.len() as u32).to_be_bytes());
        for sub in &r.subscriptions {
            put_str(&mut out, &sub.filter);
            let mut flags = sub.qos as u8;
            if sub.no_local {
                flags |= 4;
            }
            if sub.retain_as_published {
                flags |= 8;
            }
            if sub.id.is_some() {
                flags |= 16;
            }
            if sub.since.is_some() {
                flags |= 32;
            }
            out.push(flags);
            if let Some(id) = sub.id {
                out.extend_from_slice(&id.to_be_bytes());
            }
            if let Some(since) = sub.since {
                out.extend_from_slice(&since.to_be_bytes());
            }
        }
        out.extend_from_slice(&s.next_pkid.to_be_bytes());
        out.extend_from_slice(&(s.outgoing.len() as u32).to_be_bytes());
        for o in &s.outgoing {
            out.extend_from_slice(&o.pkid.to_be_bytes());
            out.push(u8::from(o.released));
            out.extend_from_slice(&o.seq.map_or(0, Seq::get).to_be_bytes());
        }
        out.extend_from_slice(&(s.inbound_qos2.len() as u32).to_be_bytes());
        for id in &s.inbound_qos2 {
            out.extend_from_slice(&id.to_be_bytes());
        }
        let empty = LogPosition::default();
        let log = s.log.as_ref().unwrap_or(&empty);
        out.extend_from_slice(&log.position.to_be_bytes());
        out.extend_from_slice(&(log.done.len() as u32).to_be_bytes());
        for d in &log.done {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(&(log.sent_qos.len() as u32).to_be_bytes());
        for (pkid, qos) in &log.sent_qos {
            out.extend_from_slice(&pkid.to_be_bytes());
            out.push(*qos as u8);
        }
        out
    }

    /// Read a value written by [`Kept::encode`].
    pub fn decode(buf: &[u8]) -> Result<Kept, RecordError> {
        let mut r = Cursor::new(buf);
        // A version 1 record's log sequences become positions: "up to message s" is every
        // position of s, message s itself is its first (and then only) entry.
        let (through, at): (Convert, Convert) = match r.u8()? {
            VERSION => (|p| p, |p| p),
            VERSION_MESSAGES => (
                |s| if s == 0 { 0 } else { position::through(s) },
                |s| position::at(s, 0).map_or(0, Seq::get),
            ),
            _ => return Err(RecordError("unknown version")),
        };
        let session_id = r.u64()?;
        let epoch = r.u64()?;
        let n = usize::from(r.u8()?);
        let owner = match n {
            0 => None,
            _ => Some(
                String::from_utf8(r.take(n)?.to_vec())
                    .map_err(|_| RecordError("owner not UTF-8"))?,
            ),
        };
        let boot = r.u64()?;
        let client = r.string32()?;
        let expiry = r.u32()?;
        let away_since = match r.u64()? {
            0 => None,
            t => Some(UNIX_EPOCH + Duration::from_millis(t)),
        };
        let n = r.count(5)?;
        let mut subscriptions = Vec::with_capacity(n);
        for _ in 0..n {
            let filter = r.string32()?;
            let flags = r.u8()?;
            let qos = QoS::from_u8(flags & 3).ok_or(RecordError("subscription QoS 3"))?;
            let id = if flags & 16 != 0 {
                Some(r.u32()?)
            } else {
                None
            };
            let since = if flags & 32 != 0 {
                Some(through(r.u64()?))
            } else {
                None
            };
            subscriptions.push(StoredSubscription {
                filter,
                qos,
                no_local: flags & 4 != 0,
                retain_as_published: flags & 8 != 0,
                id,
                since,
            });
        }
        let next_pkid = r.u16()?;
        let n = r.count(11)?;
        let mut outgoing = Vec::with_capacity(n);
        for _ in 0..n {
            let pkid = r.u16()?;
            let released = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(RecordError("exchange flags neither 0 nor 1")),
            };
            outgoing.push(StoredInflight {
                pkid,
                seq: Seq::new(at(r.u64()?)),
                released,
            });
        }
        let n = r.count(2)?;
        let mut inbound_qos2 = Vec::with_capacity(n);
        for _ in 0..n {
            inbound_qos2.push(r.u16()?);
        }
        let position = through(r.u64()?);
        let n = r.count(8)?;
        let mut done = Vec::with_capacity(n);
        for _ in 0..n {
            done.push(at(r.u64()?));
        }
        let n = r.count(3)?;
        let mut sent_qos = Vec::with_capacity(n);
        for _ in 0..n {
            let pkid = r.u16()?;
            let qos = QoS::from_u8(r.u8()?).ok_or(RecordError("sent QoS above 2"))?;
            sent_qos.push((pkid, qos));
        }
        if r.remaining() != 0 {
            return Err(RecordError("trailing bytes"));
        }
        Ok(Kept {
            client,
            session_id,
            epoch,
            owner,
            boot,
            record: SessionRecord {
                expiry,
                away_since,
                subscriptions,
            },
            state: StoredState {
                next_pkid,
                outgoing,
                inbound_qos2,
                log: Some(LogPosition {
                    position,
                    done,
                    sent_qos,
                }),
            },
        })
    }

    /// Whether the session, away, has outlived its expiry at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        if self.owner.is_some() || self.record.expiry == u32::MAX {
            return false;
        }
        let Some(away) = self.record.away_since else {
            return false;
        };
        now.duration_since(away).unwrap_or_default()
            >= Duration::from_secs(u64::from(self.record.expiry))
    }

    /// When an away session expires (`None`: connected, or never).
    pub fn expires_at(&self) -> Option<SystemTime> {
        if self.owner.is_some() || self.record.expiry == u32::MAX {
            return None;
        }
        Some(self.record.away_since? + Duration::from_secs(u64::from(self.record.expiry)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Kept {
        Kept {
            client: "sensör/1 x".into(),
            session_id: 77,
            epoch: 3,
            owner: Some("node-a".into()),
            boot: 0xfeed,
            record: SessionRecord {
                expiry: 300,
                away_since: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
                subscriptions: vec![
                    StoredSubscription {
                        filter: "a/+/#".into(),
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        id: Some(9),
                        since: Some(41),
                    },
                    StoredSubscription {
                        filter: "$share/g/b".into(),
                        qos: QoS::AtMostOnce,
                        no_local: false,
                        retain_as_published: false,
                        id: None,
                        since: Some(0),
                    },
                ],
            },
            state: StoredState {
                next_pkid: 12,
                outgoing: vec![
                    StoredInflight {
                        pkid: 4,
                        seq: Seq::new(99),
                        released: false,
                    },
                    StoredInflight {
                        pkid: 5,
                        seq: None,
                        released: true,
                    },
                ],
                inbound_qos2: vec![7, 8],
                log: Some(LogPosition {
                    position: 90,
                    done: vec![95, 97],
                    sent_qos: vec![(4, QoS::ExactlyOnce)],
                }),
            },
        }
    }

    #[test]
    fn every_part_round_trips_and_truncation_is_an_error() {
        let k = sample();
        let enc = k.encode();
        assert_eq!(Kept::decode(&enc).unwrap(), k);
        for cut in 0..enc.len() {
            assert!(Kept::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut away = k.clone();
        away.owner = None;
        away.record.away_since = None;
        assert_eq!(Kept::decode(&away.encode()).unwrap(), away);
    }

    #[test]
    fn a_version_1_record_counts_log_messages_and_is_read_as_positions() {
        let k = sample();
        let mut enc = k.encode();
        enc[0] = VERSION_MESSAGES;
        let old = Kept::decode(&enc).expect("version 1 is still read");
        let subs: Vec<_> = old.record.subscriptions.iter().map(|s| s.since).collect();
        assert_eq!(subs[0], Some(position::through(41)));
        assert_eq!(subs[1], Some(0), "0 (from the start) stays 0");
        assert_eq!(
            old.state.outgoing[0].seq,
            position::at(99, 0),
            "an exchange names its message's first entry"
        );
        let log = old.state.log.as_ref().map(|l| l.position);
        assert_eq!(log, Some(position::through(90)));
    }

    #[test]
    fn keys_are_valid_kv_keys_and_long_ids_are_hashed() {
        for id in ["a", "x.y z/ü", "$bridge/b", "-", "_"] {
            let k = key(id);
            assert!(k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
        assert_ne!(key("a.b"), key("a/b"));
        let long = "é".repeat(400);
        let k = key(&long);
        assert!(k.starts_with("_h") && k.len() == 66, "{k}");
        assert_ne!(k, key(&"é".repeat(401)));
    }

    #[test]
    fn expiry_counts_from_away_since() {
        let mut k = sample();
        k.owner = None;
        let away = k.record.away_since.unwrap();
        assert!(!k.expired(away + Duration::from_secs(299)));
        assert!(k.expired(away + Duration::from_secs(300)));
        k.record.expiry = u32::MAX;
        assert!(!k.expired(away + Duration::from_secs(1 << 40)));
        k.record.expiry = 300;
        k.owner = Some("a".into());
        assert!(
            !k.expired(away + Duration::from_secs(1000)),
            "owned: connected"
        );
    }

    proptest! {
        #[test]
        fn garbage_is_an_error_never_a_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Kept::decode(&data);
        }
    }
}

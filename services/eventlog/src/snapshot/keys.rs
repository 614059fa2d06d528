//! The `Nats-Msg-Id`s a snapshot covers, as fingerprints: what the command path looks a repeated
//! command's key up in, once the key's event is older than the snapshot.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::log::RawEvent;

/// The `Nats-Msg-Id`s of the events a snapshot covers, as 64-bit fingerprints (the first 8 bytes of
/// each one's SHA-256), sorted; stored as base64. 8 bytes an event, where the ids with their
/// sequences take ~90: a snapshot of 100,000 events still fits a value of 1 MiB, and every command
/// reads an eighth of it. A fingerprint that matches says only that the key *may* be there: the
/// command path then reads the whole history to find its event (a repeat after JetStream's duplicate
/// window is rare; a false match, one in 2⁶⁴ / events, rarer still), so a repeat is answered exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Keys(Vec<u64>);

impl Keys {
    /// The fingerprint of `msg_id`.
    fn fingerprint(msg_id: &str) -> u64 {
        let hash = Sha256::digest(msg_id.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_be_bytes(first)
    }

    /// Whether an event appended with `msg_id` may be among those covered.
    pub(crate) fn may_hold(&self, msg_id: &str) -> bool {
        self.0.binary_search(&Self::fingerprint(msg_id)).is_ok()
    }

    /// These and the ids of `events`.
    pub(crate) fn and(&self, events: &[RawEvent]) -> Self {
        let mut all = self.0.clone();
        all.extend(
            events
                .iter()
                .filter_map(|e| e.msg_id.as_deref())
                .map(Self::fingerprint),
        );
        all.sort_unstable();
        all.dedup();
        Self(all)
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl Serialize for Keys {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|k| k.to_be_bytes()).collect();
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = String::deserialize(deserializer)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(D::Error::custom)?;
        if !bytes.len().is_multiple_of(8) {
            return Err(D::Error::custom(
                "msg_ids: not a whole number of 8-byte fingerprints",
            ));
        }
        let mut keys: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| {
                let mut one = [0u8; 8];
                one.copy_from_slice(c);
                u64::from_be_bytes(one)
            })
            .collect();
        // Not trusted to be sorted (a lookup is a binary search), but checked before it is sorted:
        // they are read on every command.
        if !keys.is_sorted() {
            keys.sort_unstable();
            keys.dedup();
        }
        Ok(Self(keys))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn the_ids_of_the_covered_events_are_found_and_others_are_not() {
        let event = |seq: u64, msg_id: Option<&str>| RawEvent {
            seq,
            subject: "s".into(),
            payload: Bytes::new(),
            msg_id: msg_id.map(str::to_owned),
            pending: 0,
        };
        let first =
            Keys::default().and(&[event(1, Some("a")), event(2, None), event(3, Some("b"))]);
        let keys = first.and(&[event(4, Some("c")), event(5, Some("a"))]);
        assert_eq!(
            keys.len(),
            3,
            "one fingerprint a key, however often it was sent"
        );
        for key in ["a", "b", "c"] {
            assert!(keys.may_hold(key));
        }
        for key in ["d", "", "idem-1"] {
            assert!(!keys.may_hold(key));
        }
        let stored = serde_json::to_value(&keys).unwrap();
        assert_eq!(
            stored.as_str().unwrap().len(),
            32,
            "8 bytes a key, in base64"
        );
        assert_eq!(serde_json::from_value::<Keys>(stored).unwrap(), keys);
        // Read back sorted whatever order they were stored in; a torn list is refused.
        let mut reversed = keys.0.clone();
        reversed.reverse();
        let unsorted = serde_json::to_value(Keys(reversed)).unwrap();
        assert_eq!(serde_json::from_value::<Keys>(unsorted).unwrap(), keys);
        assert!(serde_json::from_value::<Keys>("AAAA".into()).is_err());
        assert!(serde_json::from_value::<Keys>("not base64!".into()).is_err());
    }
}

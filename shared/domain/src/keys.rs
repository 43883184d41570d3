//! Where a recipient is stored: its key shard (a hash of the recipient id) and sort key.

use crate::model::Recipient;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where a recipient is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecipientKey {
    pub shard: u32,
    pub sk: String,
}

/// The key shard of a recipient id.
pub fn shard_of(recipient_id: &str, shards: u32) -> u32 {
    let digest = Sha256::digest(recipient_id.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    n % shards.max(1)
}

/// The storage key of a recipient: by id when the id is usable and unique, else by line.
pub fn recipient_key(r: &Recipient, keyed_by_id: bool, shards: u32) -> RecipientKey {
    if keyed_by_id {
        RecipientKey {
            shard: shard_of(&r.recipient_id, shards),
            sk: format!("R#{}", r.recipient_id),
        }
    } else {
        let line = format!("L#{:010}", r.line);
        RecipientKey {
            shard: shard_of(&line, shards),
            sk: line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Channel;

    fn recipient(id: &str, line: u64) -> Recipient {
        Recipient {
            channel: Some(Channel::Sms),
            address: Some("+4520123456".into()),
            ..Recipient::pending("d1", id, line)
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("12345", 16), shard_of("12345", 16));
        let used: std::collections::HashSet<u32> =
            (0..1000).map(|i| shard_of(&i.to_string(), 16)).collect();
        assert_eq!(used.len(), 16);
        assert!(used.iter().all(|s| *s < 16));
    }

    #[test]
    fn rows_without_a_unique_id_are_keyed_by_line() {
        let r = recipient("", 42);
        assert_eq!(recipient_key(&r, false, 4).sk, "L#0000000042");
        assert_eq!(recipient_key(&recipient("7", 3), true, 4).sk, "R#7");
    }
}

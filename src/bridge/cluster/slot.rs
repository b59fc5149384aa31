//! Redis Cluster's key → hash slot rule: CRC16 (XMODEM) of the key, or of
//! its hash tag (the text between the first `{` and the next `}`, when not
//! empty), modulo 16,384. Sharded channels follow the same rule.
//!
//! Pure code. Must never differ from Redis (`cluster.c`, `keyHashSlot`):
//! every node of a deployment and the servers compute slots with it.

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// A hash slot, `0..SLOTS`.
pub type Slot = u16;

/// The hash slot of `key`.
pub fn key_slot(key: &[u8]) -> Slot {
    crc16(hash_tag(key).unwrap_or(key)) % SLOTS
}

/// The hash tag of `key`: the bytes between the first `{` and the first
/// `}` after it, when there are any.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_redis_test_vector() {
        // The check value in Redis' crc16.c.
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values of `CLUSTER KEYSLOT` on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.following"), 3443);
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}"), 4015);
    }

    #[test]
    fn hash_tags_follow_the_first_brace_pair() {
        assert_eq!(hash_tag(b"a{b}c"), Some(&b"b"[..]));
        assert_eq!(hash_tag(b"a{b}{c}"), Some(&b"b"[..]));
        assert_eq!(hash_tag(b"{}b"), None, "empty tag: the whole key");
        assert_eq!(hash_tag(b"foo{}{bar}"), None);
        assert_eq!(hash_tag(b"foo{{bar}}"), Some(&b"{bar"[..]));
        assert_eq!(hash_tag(b"a{b"), None);
        assert_eq!(hash_tag(b"ab"), None);
    }
}

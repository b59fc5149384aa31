//! Fernet tokens as Python's `cryptography` makes and reads them (the
//! Fernet spec: `0x80 ‖ timestamp u64 BE ‖ IV 16 ‖ AES-128-CBC(PKCS7) ‖
//! HMAC-SHA256`, urlsafe base64 with padding), with `MultiFernet`'s rule:
//! encrypt with the first key, decrypt with any.
//!
//! Owns the key derivation channels_redis applies to a settings string
//! (`Fernet(urlsafe_b64encode(sha256(key.encode("utf-8")).digest()))`: the
//! signing key is the digest's first half, the encryption key its second)
//! and the token checks, each a typed [`FernetError`].
//!
//! Must never: decrypt before the HMAC verified (constant-time compare), or
//! read the clock (the caller passes `now`).

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The only token version.
const VERSION: u8 = 0x80;
/// Version, timestamp and IV in front of the ciphertext.
const HEADER: usize = 1 + 8 + 16;
/// The HMAC-SHA256 tag at the end.
const TAG: usize = 32;
/// AES block size.
const BLOCK: usize = 16;
/// How far in the future a token's timestamp may be (cryptography's
/// `_MAX_CLOCK_SKEW`), checked with a TTL only, as cryptography does.
const MAX_CLOCK_SKEW: u64 = 60;

/// urlsafe base64; a token is written padded, read padded or not (as
/// cryptography reads it).
const TOKEN_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FernetError {
    /// Not base64, not version 0x80, a wrong length, or bad padding under
    /// a valid HMAC.
    #[error("not a Fernet token")]
    Malformed,
    /// No key's HMAC matches.
    #[error("no key verifies the token")]
    WrongKey,
    /// Older than the TTL.
    #[error("token older than the TTL")]
    Expired,
    /// Dated more than 60 s after `now`.
    #[error("token dated in the future")]
    Future,
}

/// One Fernet key.
#[derive(Clone)]
pub(crate) struct Key {
    /// HMAC state keyed with the signing half (cloned per use).
    mac: HmacSha256,
    encryption: [u8; 16],
}

impl Key {
    /// The key channels_redis's `make_fernet` derives from a settings string.
    pub(crate) fn from_setting(secret: &str) -> Key {
        let digest = Sha256::digest(secret.as_bytes());
        let (signing, encryption) = digest.split_at(16);
        let mac = HmacSha256::new_from_slice(signing).expect("HMAC takes keys of any length");
        let mut enc = [0; 16];
        enc.copy_from_slice(encryption);
        Key {
            mac,
            encryption: enc,
        }
    }

    /// The token (base64 text) of `plain` dated `now`, with the given IV.
    pub(crate) fn encrypt(&self, plain: &[u8], now: u64, iv: [u8; 16]) -> Vec<u8> {
        let padded = (plain.len() / BLOCK + 1) * BLOCK;
        let mut data = Vec::with_capacity(HEADER + padded + TAG);
        data.push(VERSION);
        data.extend_from_slice(&now.to_be_bytes());
        data.extend_from_slice(&iv);
        data.extend_from_slice(plain);
        data.resize(HEADER + padded, 0);
        let cipher = cbc::Encryptor::<aes::Aes128>::new(&self.encryption.into(), &iv.into());
        // The buffer holds the padded length, so padding cannot fail.
        let written = cipher
            .encrypt_padded_mut::<Pkcs7>(&mut data[HEADER..], plain.len())
            .map_or(0, |ct| ct.len());
        debug_assert_eq!(written, padded);
        let mut mac = self.mac.clone();
        mac.update(&data);
        data.extend_from_slice(&mac.finalize().into_bytes());
        TOKEN_B64.encode(&data).into_bytes()
    }

    /// Whether the tag at the end of `data` is this key's HMAC of the rest.
    fn verifies(&self, data: &[u8]) -> bool {
        let (body, tag) = data.split_at(data.len() - TAG);
        let mut mac = self.mac.clone();
        mac.update(body);
        mac.verify_slice(tag).is_ok()
    }

    /// The plaintext of verified, well-sized token bytes.
    fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, FernetError> {
        let mut iv = [0; 16];
        iv.copy_from_slice(&data[9..HEADER]);
        let mut buf = data[HEADER..data.len() - TAG].to_vec();
        let cipher = cbc::Decryptor::<aes::Aes128>::new(&self.encryption.into(), &iv.into());
        let len = cipher
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| FernetError::Malformed)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// `MultiFernet(keys).decrypt_at_time(token, ttl, now)` (or `decrypt(token)`
/// when `ttl` is `None`: no time check at all). The HMAC is checked before
/// the time, so a stale token under a wrong key reads as `WrongKey`;
/// cryptography checks the time first, which rejects the same tokens.
pub(crate) fn decrypt(
    keys: &[Key],
    token: &[u8],
    ttl: Option<u64>,
    now: u64,
) -> Result<Vec<u8>, FernetError> {
    let data = TOKEN_B64
        .decode(token)
        .map_err(|_| FernetError::Malformed)?;
    let sized =
        data.len() >= HEADER + BLOCK + TAG && (data.len() - HEADER - TAG).is_multiple_of(BLOCK);
    if !sized || data[0] != VERSION {
        return Err(FernetError::Malformed);
    }
    let key = keys
        .iter()
        .find(|k| k.verifies(&data))
        .ok_or(FernetError::WrongKey)?;
    if let Some(ttl) = ttl {
        check_time(timestamp(&data), ttl, now)?;
    }
    key.decrypt(&data)
}

/// The token's timestamp, unverified (the caller checked the HMAC).
fn timestamp(data: &[u8]) -> u64 {
    let mut ts = [0; 8];
    ts.copy_from_slice(&data[1..9]);
    u64::from_be_bytes(ts)
}

/// cryptography's rule: `timestamp + ttl < now` is expired,
/// `now + 60 < timestamp` is from the future; both bounds are inclusive.
fn check_time(ts: u64, ttl: u64, now: u64) -> Result<(), FernetError> {
    if ts.saturating_add(ttl) < now {
        return Err(FernetError::Expired);
    }
    if now.saturating_add(MAX_CLOCK_SKEW) < ts {
        return Err(FernetError::Future);
    }
    Ok(())
}

/// Whether bytes look like a Fernet token (version 0x80 and a timestamp
/// below 2^32 encode as `gAAAAA`): to tell "encrypted, but we have no key"
/// from garbage.
pub(crate) fn looks_like_token(bytes: &[u8]) -> bool {
    bytes.starts_with(b"gAAAAA")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's test vector (fernet/spec `generate.json`, `verify.json`).
    const SPEC_SECRET: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    const SPEC_TOKEN: &str = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";
    /// 1985-10-26T01:20:00-07:00.
    const SPEC_NOW: u64 = 499_162_800;

    fn spec_key() -> Key {
        let raw = TOKEN_B64.decode(SPEC_SECRET).unwrap();
        Key {
            mac: HmacSha256::new_from_slice(&raw[..16]).unwrap(),
            encryption: raw[16..].try_into().unwrap(),
        }
    }

    #[test]
    fn the_spec_vector_both_ways() {
        let iv: [u8; 16] = std::array::from_fn(|i| i as u8);
        let token = spec_key().encrypt(b"hello", SPEC_NOW, iv);
        assert_eq!(token, SPEC_TOKEN.as_bytes());
        let plain = decrypt(&[spec_key()], SPEC_TOKEN.as_bytes(), Some(60), SPEC_NOW + 1);
        assert_eq!(plain.unwrap(), b"hello");
    }

    #[test]
    fn time_bounds_are_cryptographys() {
        let k = Key::from_setting("key-one");
        let t = k.encrypt(b"hi", 1000, [7; 16]);
        let at = |now| decrypt(std::slice::from_ref(&k), &t, Some(70), now);
        assert_eq!(at(1070), Ok(b"hi".to_vec()));
        assert_eq!(at(1071), Err(FernetError::Expired));
        assert_eq!(at(940), Ok(b"hi".to_vec()));
        assert_eq!(at(939), Err(FernetError::Future));
        // No TTL: no time check (the pub/sub layer).
        let no_ttl = decrypt(std::slice::from_ref(&k), &t, None, u64::MAX);
        assert_eq!(no_ttl, Ok(b"hi".to_vec()));
        assert_eq!(check_time(u64::MAX, 70, 0), Err(FernetError::Future));
    }

    #[test]
    fn any_key_opens_and_others_do_not() {
        let (one, two) = (Key::from_setting("key-one"), Key::from_setting("key-two"));
        let t = two.encrypt(b"x", 5, [1; 16]);
        assert_eq!(decrypt(&[one.clone(), two], &t, None, 5), Ok(b"x".to_vec()));
        assert_eq!(decrypt(&[one], &t, None, 5), Err(FernetError::WrongKey));
        assert!(looks_like_token(&t));
    }

    #[test]
    fn malformed_tokens() {
        let k = Key::from_setting("key-one");
        let t = k.encrypt(b"payload", 5, [1; 16]);
        let unpadded: Vec<u8> = t.iter().copied().filter(|b| *b != b'=').collect();
        assert!(decrypt(std::slice::from_ref(&k), &unpadded, None, 5).is_ok());
        let keys = [k];
        for bad in [&b""[..], b"gAAAAA", b"not base64!", &t[..t.len() - 4]] {
            assert_eq!(decrypt(&keys, bad, None, 5), Err(FernetError::Malformed));
        }
        let mut raw = TOKEN_B64.decode(&t).unwrap();
        raw[0] = 0x81;
        let v81 = TOKEN_B64.encode(&raw);
        assert_eq!(
            decrypt(&keys, v81.as_bytes(), None, 5),
            Err(FernetError::Malformed)
        );
        raw[0] = 0x80;
        raw[30] ^= 1;
        let flipped = TOKEN_B64.encode(&raw);
        assert_eq!(
            decrypt(&keys, flipped.as_bytes(), None, 5),
            Err(FernetError::WrongKey)
        );
    }
}

//! channels_redis's serializer: a layer message (a dict) to the bytes in
//! Redis and back, as `channels_redis.serializers` `serialize` and
//! `deserialize` do (4.2.1+; 3.x–4.2.0 did the same inline in `core.py`
//! with msgpack only and a fixed 12-byte prefix).
//!
//! `serialize`: bytes of the format (msgpack, or `json.dumps` UTF-8) →
//! Fernet-encrypted with the first of `symmetric_encryption_keys` when
//! there are keys → `random_prefix_length` random bytes in front.
//! `deserialize`: drop the prefix → decrypt with any key within the TTL →
//! parse. The two layers use it differently:
//! - core (`RedisChannelLayer`): prefix 12 (settings `random_prefix_length`,
//!   4.2.1+), TTL `expiry + 10` s: `Codec::new(fmt, keys, 12, Some(expiry + 10 s))`.
//! - pub/sub (`RedisPubSubChannelLayer`): 4.2.1+ builds its serializer with
//!   only the format and keys, so no prefix and no TTL:
//!   `Codec::new(fmt, keys, 0, None)`. Up to 4.2.0 (4.1 included) it was
//!   plain `msgpack.packb`/`unpackb`, no encryption and no JSON even when
//!   configured: that is `Codec::new(Format::Msgpack, &[], 0, None)`.
//!
//! Owns [`Codec`], [`Format`] and [`OpenError`] (with its metric label).
//!
//! Must never: read the clock in [`Codec::open_at`] / [`Codec::seal_at`]
//! (tests pass the time), parse a token whose HMAC no key verified, or
//! show key material (its `Debug` counts the keys).

mod fernet;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore as _;

use super::wire::{self, Value, WireError};
use fernet::{FernetError, Key};

/// `serializer_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `"msgpack"` (the default).
    Msgpack,
    /// `"json"`: Python's `json.dumps`, UTF-8.
    Json,
}

/// One layer's serializer settings.
#[derive(Clone)]
pub(crate) struct Codec {
    format: Format,
    /// `MultiFernet` keys in settings order; empty: no encryption.
    keys: Vec<Key>,
    random_prefix_length: usize,
    /// Decrypt TTL in seconds; `None`: no time check.
    ttl: Option<u64>,
}

/// Why raw layer bytes are not a message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// Nothing after the random prefix.
    #[error("no bytes after the {0}-byte random prefix")]
    Short(usize),
    /// Encryption is on and no key's HMAC matches, or the token is not a
    /// Fernet token; or encryption is off and a Fernet token came.
    #[error("no key opens the token")]
    WrongKey,
    /// The token is older than the TTL (`expiry + 10` s on the core layer).
    #[error("token older than the TTL")]
    Expired,
    /// The token is dated more than 60 s ahead of our clock.
    #[error("token dated more than 60 s ahead")]
    Future,
    /// The plaintext is not a value of the format, or not one JSON can hold.
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl OpenError {
    /// The bounded metric label: `short`, `wrong_key`, `expired`, `future`,
    /// `garbage` (undecodable bytes) or `unsupported` (bin, ext, non-string
    /// key, non-finite float, too deep).
    #[cfg(test)]
    pub(crate) fn label(&self) -> &'static str {
        match self {
            OpenError::Short(_) => "short",
            OpenError::WrongKey => "wrong_key",
            OpenError::Expired => "expired",
            OpenError::Future => "future",
            OpenError::Wire(e) if e.is_unsupported() => "unsupported",
            OpenError::Wire(_) => "garbage",
        }
    }
}

impl From<FernetError> for OpenError {
    fn from(e: FernetError) -> Self {
        match e {
            FernetError::Malformed | FernetError::WrongKey => OpenError::WrongKey,
            FernetError::Expired => OpenError::Expired,
            FernetError::Future => OpenError::Future,
        }
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("format", &self.format)
            .field("keys", &self.keys.len())
            .field("random_prefix_length", &self.random_prefix_length)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Codec {
    /// A serializer as channels_redis builds it: each key string becomes a
    /// Fernet key as `make_fernet` derives it (`urlsafe_b64encode(sha256(
    /// key.encode("utf-8")))`); the first key encrypts, any key decrypts.
    /// `ttl` is whole seconds (fractions dropped).
    pub(crate) fn new(
        format: Format,
        keys: &[String],
        random_prefix_length: usize,
        ttl: Option<Duration>,
    ) -> Self {
        Codec {
            format,
            keys: keys.iter().map(|k| Key::from_setting(k)).collect(),
            random_prefix_length,
            ttl: ttl.map(|t| t.as_secs()),
        }
    }

    /// The format this codec writes and reads.
    #[cfg(test)]
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// `serialize(v)` now.
    pub(crate) fn seal(&self, v: &Value) -> Vec<u8> {
        self.seal_at(v, unix_now())
    }

    /// `serialize(v)` with the Fernet timestamp `now_unix_secs`: the
    /// format's bytes, encrypted with the first key if any, behind
    /// `random_prefix_length` random bytes.
    pub(crate) fn seal_at(&self, v: &Value, now_unix_secs: u64) -> Vec<u8> {
        let mut body = Vec::new();
        match self.format {
            Format::Msgpack => wire::encode_msgpack(v, &mut body),
            Format::Json => wire::encode_python_json(v, &mut body),
        }
        let mut rng = rand::rng();
        let mut out = vec![0; self.random_prefix_length];
        rng.fill_bytes(&mut out);
        match self.keys.first() {
            Some(key) => {
                let mut iv = [0; 16];
                rng.fill_bytes(&mut iv);
                out.extend_from_slice(&key.encrypt(&body, now_unix_secs, iv));
            }
            None => out.extend_from_slice(&body),
        }
        out
    }

    /// `deserialize(raw)` now.
    pub(crate) fn open(&self, raw: &[u8]) -> Result<Value, OpenError> {
        self.open_at(raw, unix_now())
    }

    /// `deserialize(raw)` at `now_unix_secs`: drop the prefix, decrypt
    /// with any key (token timestamp + TTL < now → expired; more than 60 s
    /// ahead → future; both only with a TTL), parse.
    pub(crate) fn open_at(&self, raw: &[u8], now_unix_secs: u64) -> Result<Value, OpenError> {
        let body = match raw.get(self.random_prefix_length..) {
            Some(body) if !body.is_empty() => body,
            _ => return Err(OpenError::Short(self.random_prefix_length)),
        };
        if self.keys.is_empty() {
            return self.parse(body).map_err(|e| {
                if fernet::looks_like_token(body) {
                    OpenError::WrongKey
                } else {
                    e
                }
            });
        }
        let plain = fernet::decrypt(&self.keys, body, self.ttl, now_unix_secs)?;
        self.parse(&plain)
    }

    fn parse(&self, bytes: &[u8]) -> Result<Value, OpenError> {
        let v = match self.format {
            Format::Msgpack => wire::decode_msgpack(bytes)?,
            Format::Json => wire::decode_json(bytes)?,
        };
        Ok(v)
    }
}

/// Seconds since the Unix epoch (`int(time.time())`), 0 before it.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;

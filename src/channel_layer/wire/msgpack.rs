//! msgpack as channels_redis writes and reads it: `msgpack.packb(v)` with
//! msgpack-python ≥ 1.0's defaults (`use_bin_type=True`) and
//! `msgpack.unpackb(b)` (`raw=False`, `strict_map_key=True`).
//!
//! Owns the tag table both ways. The encoder picks the smallest form, as
//! msgpack-python does: non-negative integers as positive fixint or
//! uint8/16/32/64, negative ones as negative fixint or int8/16/32/64, every
//! float as float64, strings as fixstr or str8/16/32.
//!
//! Must never: reserve more slots than the remaining input could fill
//! (every element takes at least one byte, every map entry two), recurse
//! past [`MAX_DEPTH`], or accept trailing bytes (`unpackb` raises
//! `ExtraData`). So a decode holds at most 32 bytes of slots per input
//! byte (a [`Value`] is 32 bytes, a map entry 56 for at least 2 input
//! bytes) plus the strings' own bytes; the caller bounds the input.

use super::{python_dict, Value, WireError, MAX_DEPTH};

/// Decodes one msgpack value filling all of `bytes`, as
/// `msgpack.unpackb(bytes)` would, refusing what JSON cannot hold.
pub(crate) fn decode_msgpack(bytes: &[u8]) -> Result<Value, WireError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let v = r.value(1)?;
    if r.pos != bytes.len() {
        return Err(WireError::Trailing);
    }
    Ok(v)
}

/// A cursor over the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.remaining() {
            return Err(WireError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<usize, WireError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn u32(&mut self) -> Result<usize, WireError> {
        // usize is at least 32 bits on every target the gateway builds for.
        Ok(u32::from_be_bytes(self.array()?) as usize)
    }

    fn value(&mut self, depth: usize) -> Result<Value, WireError> {
        let tag = self.u8()?;
        match tag {
            0x00..=0x7f => Ok(Value::Int(i64::from(tag))),
            0x80..=0x8f => self.map(usize::from(tag & 0x0f), depth),
            0x90..=0x9f => self.list(usize::from(tag & 0x0f), depth),
            0xa0..=0xbf => self.str(usize::from(tag & 0x1f)),
            0xc0 => Ok(Value::Nil),
            0xc1 => Err(WireError::Reserved),
            0xc2 => Ok(Value::Bool(false)),
            0xc3 => Ok(Value::Bool(true)),
            0xc4..=0xc6 => Err(WireError::Bin),
            0xc7..=0xc9 | 0xd4..=0xd8 => Err(WireError::Ext),
            0xca => finite(f64::from(f32::from_be_bytes(self.array()?))),
            0xcb => finite(f64::from_be_bytes(self.array()?)),
            0xcc => Ok(Value::Int(i64::from(self.u8()?))),
            0xcd => Ok(Value::Int(i64::from(u16::from_be_bytes(self.array()?)))),
            0xce => Ok(Value::Int(i64::from(u32::from_be_bytes(self.array()?)))),
            0xcf => Ok(unsigned(u64::from_be_bytes(self.array()?))),
            0xd0 => Ok(Value::Int(i64::from(i8::from_be_bytes(self.array()?)))),
            0xd1 => Ok(Value::Int(i64::from(i16::from_be_bytes(self.array()?)))),
            0xd2 => Ok(Value::Int(i64::from(i32::from_be_bytes(self.array()?)))),
            0xd3 => Ok(Value::Int(i64::from_be_bytes(self.array()?))),
            0xd9 => {
                let n = usize::from(self.u8()?);
                self.str(n)
            }
            0xda => {
                let n = self.u16()?;
                self.str(n)
            }
            0xdb => {
                let n = self.u32()?;
                self.str(n)
            }
            0xdc => {
                let n = self.u16()?;
                self.list(n, depth)
            }
            0xdd => {
                let n = self.u32()?;
                self.list(n, depth)
            }
            0xde => {
                let n = self.u16()?;
                self.map(n, depth)
            }
            0xdf => {
                let n = self.u32()?;
                self.map(n, depth)
            }
            0xe0..=0xff => Ok(Value::Int(i64::from(tag as i8))),
        }
    }

    fn str(&mut self, n: usize) -> Result<Value, WireError> {
        Ok(Value::Str(self.string(n)?))
    }

    fn string(&mut self, n: usize) -> Result<String, WireError> {
        let bytes = self.take(n)?;
        let s = std::str::from_utf8(bytes).map_err(|_| WireError::BadUtf8)?;
        Ok(s.to_owned())
    }

    fn list(&mut self, n: usize, depth: usize) -> Result<Value, WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError::TooDeep);
        }
        if n > self.remaining() {
            return Err(WireError::Truncated);
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError::TooDeep);
        }
        if n > self.remaining() / 2 {
            return Err(WireError::Truncated);
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.key()?;
            entries.push((key, self.value(depth + 1)?));
        }
        Ok(Value::Map(python_dict(entries)))
    }

    /// A map key: only a string is one JSON can hold.
    fn key(&mut self) -> Result<String, WireError> {
        let n = match self.u8()? {
            tag @ 0xa0..=0xbf => usize::from(tag & 0x1f),
            0xd9 => usize::from(self.u8()?),
            0xda => self.u16()?,
            0xdb => self.u32()?,
            _ => return Err(WireError::NonStringKey),
        };
        self.string(n)
    }
}

fn finite(f: f64) -> Result<Value, WireError> {
    if f.is_finite() {
        Ok(Value::Float(f))
    } else {
        Err(WireError::NonFinite)
    }
}

/// A uint64 as a [`Value`]: [`Value::Int`] when it fits.
fn unsigned(n: u64) -> Value {
    match i64::try_from(n) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::UInt(n),
    }
}

/// Appends `v` as `msgpack.packb(v, use_bin_type=True)` writes the same
/// Python value (byte for byte). A non-finite float is written as such
/// (Python would too); the decoders never produce one.
pub(crate) fn encode_msgpack(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(n) => match u64::try_from(*n) {
            Ok(u) => put_uint(u, out),
            Err(_) => put_negative(*n, out),
        },
        Value::UInt(u) => put_uint(*u, out),
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => put_str(s, out),
        Value::Array(items) => {
            put_len(items.len(), 0x90, 0xdc, out);
            for item in items {
                encode_msgpack(item, out);
            }
        }
        Value::Map(entries) => {
            put_len(entries.len(), 0x80, 0xde, out);
            for (k, item) in entries {
                put_str(k, out);
                encode_msgpack(item, out);
            }
        }
    }
}

fn put_uint(u: u64, out: &mut Vec<u8>) {
    if u < 0x80 {
        out.push(u as u8);
    } else if let Ok(b) = u8::try_from(u) {
        out.extend_from_slice(&[0xcc, b]);
    } else if let Ok(h) = u16::try_from(u) {
        out.push(0xcd);
        out.extend_from_slice(&h.to_be_bytes());
    } else if let Ok(w) = u32::try_from(u) {
        out.push(0xce);
        out.extend_from_slice(&w.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

/// A negative integer in its smallest form.
fn put_negative(n: i64, out: &mut Vec<u8>) {
    if n >= -32 {
        out.push(n as i8 as u8);
    } else if let Ok(b) = i8::try_from(n) {
        out.extend_from_slice(&[0xd0, b as u8]);
    } else if let Ok(h) = i16::try_from(n) {
        out.push(0xd1);
        out.extend_from_slice(&h.to_be_bytes());
    } else if let Ok(w) = i32::try_from(n) {
        out.push(0xd2);
        out.extend_from_slice(&w.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if let Ok(b) = u8::try_from(n) {
        out.extend_from_slice(&[0xd9, b]);
    } else if let Ok(h) = u16::try_from(n) {
        out.push(0xda);
        out.extend_from_slice(&h.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&len32(n).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// An array (`fix` 0x90, `tag16` 0xdc) or map (0x80, 0xde) header; the
/// 32-bit form's tag follows the 16-bit one.
fn put_len(n: usize, fix: u8, tag16: u8, out: &mut Vec<u8>) {
    if n < 16 {
        out.push(fix | n as u8);
    } else if let Ok(h) = u16::try_from(n) {
        out.push(tag16);
        out.extend_from_slice(&h.to_be_bytes());
    } else {
        out.push(tag16 + 1);
        out.extend_from_slice(&len32(n).to_be_bytes());
    }
}

/// A length in a 32-bit header (msgpack has no larger one; Python's
/// `packb` raises past it, a layer message is never near it).
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;

//! The wire vocabulary: decoding client frames and encoding server events
//! (docs/protocol.md §3–§5, and §9 for protocol v2).
//!
//! Owns, through its submodules, every byte the gateway reads or writes
//! inside a WebSocket text frame; this file only names the parts and
//! re-exports what the rest of the crate uses (`crate::protocol::X`).
//!
//! # Layout
//! - `errors.rs` — [`ReplyError`]: the `{"type":"error"}` replies, each defined once.
//! - `decode.rs` — [`Decoder`]: one simd-json pass per frame into a reused
//!   tape, with a serde_json slow path for what simd-json rejects.
//! - `message.rs` — [`ClientMessage`] and [`SignalKind`]: what a frame means
//!   once its rule passed (the per-type rules build it; nothing imported back).
//! - `envelope.rs` — the envelope of a client frame: the fields the rules
//!   look at and the dispatch on `type`.
//! - `value.rs` — one JSON value reduced to what the rules need (Python truthiness).
//! - `validate.rs` — field rules shared by message types: Python `str.strip()`,
//!   the content rules, decimal id parsing.
//! - one file per message type, holding its client rule and its server
//!   encoder: `chat.rs` (`chat_message` → `new_message`), `delete.rs`
//!   (`delete_message` → `message_deleted`), `typing.rs` (`typing` both ways);
//!   v2: `history.rs` (`history` → a page; also the HTTP bodies),
//!   `mark_read.rs` (`mark_read` → `read_receipt`, `read_state`),
//!   `react.rs` (`react` → `reaction`), `presence.rs` (`presence_state`,
//!   `presence`; no client message), `call_signal.rs` (`call_signal` both
//!   ways), `upload.rs` (`upload_progress` both ways).
//! - `raw.rs` — the text of one member of a JSON object (`call_signal`'s
//!   `payload`, relayed byte for byte).
//! - `resume.rs` — v2 replay after a reconnect (`new_message` with
//!   reactions, `resumed`); no client message.
//! - `version.rs` — [`Version`] and its negotiation from the subprotocol.
//! - `session.rs` — the constant frames of a socket's life (`connection_established`, `ping`).
//! - `json.rs` — low-level JSON writers: integers, escaped strings, timestamps.
//! - `testing.rs` — helpers shared by the unit tests (compiled for tests only).
//!
//! A new message type lands in a file named after it, plus one key and one
//! dispatch arm in `envelope.rs` and one variant of [`ClientMessage`] in
//! `message.rs`.
//!
//! Must never: do I/O, block, or allocate on the decode path of a common
//! message (one [`Decoder`] per shard reuses its scratch copy, simd-json's
//! buffers and its tape; `&str`s borrow from the scratch copy, escaped or
//! not). Encoders only ever append to the caller's `Vec<u8>`: the caller has
//! reserved frame-header room in front.

mod call_signal;
mod chat;
mod decode;
mod delete;
mod envelope;
mod errors;
mod history;
mod json;
mod mark_read;
mod message;
mod presence;
mod raw;
mod react;
mod resume;
mod session;
#[cfg(test)]
mod testing;
mod typing;
mod upload;
mod validate;
mod value;
mod version;

pub use call_signal::{encode_call_signal, MAX_SIGNAL_FRAME};
pub(crate) use chat::NEW_MESSAGE_HEAD;
pub use chat::{encode_new_message, new_message_object, sender_json};
pub use decode::Decoder;
pub use delete::encode_message_deleted;
pub use errors::ReplyError;
pub use history::{
    encode_detail, encode_history_item, encode_history_reply, encode_history_results,
    DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT,
};
pub use json::{write_json_str, write_timestamp};
pub use mark_read::{encode_read_receipt, encode_read_state};
pub use message::{ClientMessage, SignalKind};
pub use presence::{encode_presence, encode_presence_state};
pub use raw::member_text;
pub use react::{encode_reaction, MAX_EMOJI_CHARS};
pub use resume::{encode_replayed, encode_resumed};
pub use session::{CONNECTION_ESTABLISHED, PING};
pub use typing::encode_typing;
pub(crate) use typing::TYPING_HEAD;
pub use upload::encode_upload_progress;
pub use validate::{python_strip, validate_content, MAX_CONTENT_CHARS};
pub use version::{Version, V2_SUBPROTOCOL};

//! How a server API call fails: the error codes of docs/protocol.md §10 and
//! the body every refusal carries, `{"error":{"code":…,"message":…}}`.
//!
//! Owns: [`ApiError`] (a call understood but refused: HTTP 400, or one
//! reply of a batch) and [`Refusal`] (a request refused before any method
//! ran: 401, 404, 405, 413, 415, or 400 for a body that is not a JSON
//! object), each with its code.
//!
//! Must never: put a key, a token or a database error's text in a message
//! (the store's failures become `unavailable` with a fixed text).

use http::StatusCode;
use serde_json::{json, Value};

/// A call that was understood and refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A missing or mistyped parameter; the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// No such conversation, user or method.
    #[error("{0}")]
    NotFound(String),
    /// The sender is not a participant of the conversation.
    #[error("the sender is not a participant of the conversation")]
    NotParticipant,
    /// The content is empty once stripped.
    #[error("the message is empty")]
    EmptyMessage,
    /// The content is longer than the limit once stripped.
    #[error("the message is too long")]
    MessageTooLong,
    /// A shard or the store did not answer in time.
    #[error("{0}")]
    Unavailable(&'static str),
}

impl ApiError {
    /// A missing or mistyped parameter.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// The code in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::NotParticipant => "not_participant",
            Self::EmptyMessage => "empty_message",
            Self::MessageTooLong => "message_too_long",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// `{"code":…,"message":…}`.
    pub fn body(&self) -> Value {
        json!({ "code": self.code(), "message": self.to_string() })
    }
}

/// A request refused before a method ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No key, or not one of the configured keys: 401.
    Unauthorized,
    /// Not `/api/<method>`, or no such method: 404.
    UnknownMethod,
    /// Not `POST`: 405.
    MethodNotAllowed,
    /// The body is over the limit: 413.
    TooLarge,
    /// The body is not declared as JSON: 415.
    UnsupportedMediaType,
    /// The body is not a JSON object, or did not arrive in time: 400.
    BadBody(&'static str),
}

impl Refusal {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::UnknownMethod => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The code in the error body.
    pub fn code(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::UnknownMethod => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BadBody(_) => "bad_request",
        }
    }

    /// The message in the error body.
    pub fn message(self) -> &'static str {
        match self {
            Self::Unauthorized => "a valid API key is required",
            Self::UnknownMethod => "no such method",
            Self::MethodNotAllowed => "only POST is allowed",
            Self::TooLarge => "the body is larger than 1 MiB",
            Self::UnsupportedMediaType => "the body must be application/json",
            Self::BadBody(why) => why,
        }
    }

    /// `{"code":…,"message":…}`.
    pub fn body(self) -> Value {
        json!({ "code": self.code(), "message": self.message() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(ApiError::bad("x").code(), "bad_request");
        assert_eq!(ApiError::NotFound("x".into()).code(), "not_found");
        assert_eq!(ApiError::NotParticipant.code(), "not_participant");
        assert_eq!(ApiError::EmptyMessage.code(), "empty_message");
        assert_eq!(ApiError::MessageTooLong.code(), "message_too_long");
        assert_eq!(ApiError::Unavailable("x").code(), "unavailable");
        assert_eq!(Refusal::Unauthorized.status(), 401);
        assert_eq!(Refusal::TooLarge.status(), 413);
        assert_eq!(
            ApiError::bad("conversation_id is required").body(),
            json!({"code": "bad_request", "message": "conversation_id is required"})
        );
    }
}

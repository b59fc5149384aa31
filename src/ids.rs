//! The primary keys the whole gateway passes around: users, conversations,
//! messages (the Django app's table ids).
//!
//! Owns only these names, so that a module that merely carries an id (the
//! audience of an event, a rate limit's key, a wire encoder) needs nothing
//! else of the store. `crate::store` re-exports them.
//!
//! Must never: import another module of the crate, or grow behaviour.

/// Primary key of `auth_user`.
pub type UserId = i64;
/// Primary key of `chatapp_conversation`.
pub type ConversationId = i64;
/// Primary key of `chatapp_message`.
pub type MessageId = i64;

//! (placeholder)
#![allow(dead_code)]

pub(crate) mod events;
pub(crate) mod names;
pub(crate) mod seal;
pub(crate) mod wire;

//! (placeholder)
#![allow(dead_code)]

pub(crate) mod seal;
pub(crate) mod wire;

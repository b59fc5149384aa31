//! (placeholder)
#![allow(dead_code)]

pub(crate) mod wire;

//! Helpers of the fault tests (Redis killed, Redis Cluster failovers and
//! slot moves): Redis servers of the test's own (`server.rs`), a local
//! Redis Cluster (`cluster.rs`), steady traffic and what sockets saw
//! (`traffic.rs`), and the stage of nodes, conversations and sockets
//! (`scene.rs`).
//!
//! Must never: touch the shared Redis on 6379 (every server here is the
//! test's own, on free ports, killed when dropped).
#![allow(dead_code)]

pub mod cluster;
pub mod scene;
pub mod server;
pub mod traffic;

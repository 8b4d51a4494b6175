//! # flotilla-node
//!
//! The Flotilla node: durable Raft log storage on sled, the MVCC key-value state machine with
//! etcd semantics, the gRPC transport between peers, the etcd v3 client API, metrics, and
//! `flotilla dev`.
//!
//! - [`node`] starts a member; [`server`] holds the Raft loop and the handle the APIs use;
//! - [`transport`] moves Raft messages between members; [`api`] serves clients;
//! - [`metrics`] and [`http`] export Prometheus metrics and health probes;
//! - [`config`] parses flags; [`dev`] runs a local cluster.

#![warn(missing_docs)]

pub mod api;
pub mod authority;
pub mod cli;
pub mod codec;
pub mod config;
pub mod dev;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod server;
pub mod snapshot_file;
pub mod storage;
pub mod transport;

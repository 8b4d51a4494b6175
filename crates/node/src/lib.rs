//! # flotilla-node
//!
//! The Flotilla node: the Raft log in a write-ahead log, the MVCC key-value state machine with
//! etcd semantics on sled, the gRPC transport between peers, the etcd v3 client API, metrics,
//! and `flotilla dev`.
//!
//! - [`node`] starts a member; [`member`] is the running member: the Raft loop, its state
//!   machine and the handle the APIs and the transport use;
//! - [`contract`] holds what the member shares with its neighbours (commands, errors, the
//!   outbox, status, forwarding), importing none of them;
//! - [`transport`] moves Raft messages between members; [`codec`] is their wire format;
//! - [`api`] serves clients (and [`gateway`] serves them JSON; [`client_http`] is everything
//!   on the client port that is not a gRPC service); [`authority`] accepts the
//!   `:authority` etcd 3.4 clients send;
//! - [`storage`] keeps the log and the member's identity; [`mvcc`] is the key-value store;
//!   [`snapshot_file`] reads the files `etcdctl snapshot save` writes; [`backup`] saves them to
//!   object storage from a running cluster, lists, prunes and restores them;
//! - [`metrics`] and [`http`] export Prometheus metrics and health probes;
//! - [`tls`] is TLS on both ports (certificates reloaded without a restart) and who a
//!   connection's certificate says its caller is;
//! - [`config`] parses flags, [`cli`] holds what the binaries share; [`dev`] runs a local
//!   cluster.
//!
//! Imports form a DAG: `node` → `api` → `member` → `contract`, with `transport` → `member`
//! (to deliver what it receives) and the member reaching the transport only through the
//! `contract` traits (`Outbox`, `Forwarding`).

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod authority;
pub mod backup;
pub mod cli;
pub mod client_http;
pub mod codec;
pub mod config;
pub mod contract;
pub mod dev;
pub mod gateway;
pub mod http;
pub mod log_limit;
pub mod member;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod snapshot_file;
pub mod storage;
pub mod tls;
pub mod transport;

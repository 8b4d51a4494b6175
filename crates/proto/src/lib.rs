//! # flotilla-proto
//!
//! Code generated from the workspace's `proto/` folder, and nothing else (docs/ARCHITECTURE.md: generated
//! code lives only here). `build.rs` compiles the files with `protox`, so building needs cargo
//! alone.
//!
//! - [`etcdserverpb`], [`mvccpb`], [`authpb`]: the etcd v3.4 client API, wire-compatible with
//!   etcd (same packages, services, field numbers), so `etcdctl` works unchanged.
//! - [`raft`] (`flotilla.raft.v1`): the peer transport between members.
//! - [`internal`] (`flotilla.internal.v1`): what goes into the Raft log.
//! - [`admin`] (`flotilla.admin.v1`): the admin service the operator drives.
//!
//! Conversions between these types and the consensus core's live in the node crate.

/// The generated modules, nested by protobuf package as prost expects for cross-package
/// paths (`super::super::…`). The public names are the re-exports below.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

pub use generated::authpb;
pub use generated::etcdserverpb;
pub use generated::flotilla::admin::v1 as admin;
pub use generated::flotilla::internal::v1 as internal;
pub use generated::flotilla::raft::v1 as raft;
pub use generated::mvccpb;

/// The encoded `google.protobuf.FileDescriptorSet` of every file in `proto/` (with imports and
/// source info), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/flotilla_descriptor.bin"));

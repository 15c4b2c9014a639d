//! The protobuf contract of the bootstrap and node services, and the pieces of
//! the contract that are not protobuf: address syntax, the canonical bytes
//! that registration signatures cover, and how a node id is derived.
//!
//! # Layout
//! - [`bootstrap`] / [`node`] / [`admin`]: generated messages, clients and servers.
//! - [`address`]: parsing and validating `host:port` peer addresses.
//! - [`conn`] / [`limits`]: accepting connections within caps; per-client slots.
//! - [`dial`]: the one way every client builds a channel to a server.
//! - [`clock`]: time as a dependency (system or manual).
//! - [`work`]: cumulative chain work as messages carry it.
//! - [`identity`]: ed25519 key files shared by nodes and `p2pctl`.
//! - [`signing`]: signed Register / Remove payloads and node ids.
//! - [`serving`]: what both servers serve besides their own service
//!   (reflection, health) and how their binaries start and stop.
//! - [`storage`]: a redb database that reports failures and is reopened.
//! - [`tls`]: TLS 1.3 links whose certificates prove a node id (libp2p's design).
//! - [`etcd`]: etcd's v3 API, client side (the registry's etcd store).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.

pub mod address;
pub mod clock;
pub mod conn;
pub mod dial;
pub mod identity;
pub mod limits;
pub mod metrics_http;
pub mod rpc_bytes;
pub mod serving;
pub mod signing;
pub mod storage;
pub mod tls;
pub mod work;

/// The generated code, nested as the protobuf packages are (admin.proto
/// refers to node.proto's messages by relative path).
pub mod pb {
    pub mod p2p {
        pub mod bootstrap {
            pub mod v1 {
                #![allow(missing_docs, clippy::all, missing_debug_implementations)]
                tonic::include_proto!("p2p.bootstrap.v1");
            }
        }
        pub mod node {
            pub mod v1 {
                #![allow(missing_docs, clippy::all, missing_debug_implementations)]
                tonic::include_proto!("p2p.node.v1");
            }
        }
        pub mod admin {
            pub mod v1 {
                #![allow(missing_docs, clippy::all, missing_debug_implementations)]
                tonic::include_proto!("p2p.admin.v1");
            }
        }
    }
    pub mod etcdserverpb {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("etcdserverpb");
    }
}

/// `etcdserverpb`: the client side of etcd's v3 API (the subset the
/// registry's etcd store uses).
pub use pb::etcdserverpb as etcd;

/// `p2p.admin.v1`: a node's operator API (its own listener).
pub use pb::p2p::admin::v1 as admin;
/// `p2p.bootstrap.v1`: the registry service.
pub use pb::p2p::bootstrap::v1 as bootstrap;
/// `p2p.node.v1`: the chain node service.
pub use pb::p2p::node::v1 as node;

/// Encoded `FileDescriptorSet` of both services, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/p2p_descriptor.bin"));

/// Milliseconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

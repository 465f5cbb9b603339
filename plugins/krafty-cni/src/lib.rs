//! krafty-cni: everything the krafty plugins share.
//!
//! - [`version`], [`result`], [`error`], [`env`], [`skel`]: the CNI protocol, written for krafty;
//! - [`config`]: the plugins' network configuration and its validation;
//! - [`vrf`], [`bridge`], [`veth`]: the chain's steps, each verb of each; the plugins of the
//!   chain are one step each, the `krafty` plugin all three (with [`chain`], what they share);
//! - [`attachment`]: an attachment's identity, names, mark, group, record and teardown;
//! - [`multinode`], [`tunnel`]: networks stretched across nodes (the node list, the underlay,
//!   the VXLAN port on each node's bridge);
//! - [`naming`]: the rule behind device names, table ids and the ownership mark;
//! - [`state`]: the attachment records plugins and node agent share;
//! - [`netlink`], [`netns`]: kernel access, host side and inside a container's namespace;
//! - [`ipam`]: delegation to an IPAM plugin, and [`host_local`], host-local served in process;
//! - [`blocks`]: per-node address blocks of multi-node networks and their in-process IPAM;
//! - [`invocation_log`]: the JSON-lines history of every invocation;
//! - [`stderr_log`]: the diagnostics on stderr.

pub mod attachment;
pub mod blocks;
pub mod bridge;
pub mod chain;
pub mod config;
pub mod env;
pub mod error;
pub mod host_local;
pub mod invocation_log;
pub mod ipam;
pub mod lock;
pub mod multinode;
pub mod naming;
pub mod netlink;
pub mod netns;
pub mod result;
pub mod skel;
pub mod state;
pub mod stderr_log;
pub mod tunnel;
pub mod version;
pub mod veth;
pub mod vrf;

pub use attachment::Attachment;
pub use error::Error;
pub use result::CniResult;
pub use skel::{Plugin, Request};
pub use version::CniVersion;

//! krafty-installer: puts the krafty CNI plugins into a node's CNI bin directory and keeps them
//! there, reports what it installed, and cleans up attachments whose pods are gone.
//!
//! - [`install`]: the atomic, verified copy of each plugin from the image into the target.
//! - [`probe`]: running a plugin binary to ask for its versions.
//! - [`watch`]: inotify-driven wake-ups with a debounce, so idle costs nothing.
//! - [`agent`]: the process itself: one-shot or daemon, readiness, backoff, shutdown.
//! - [`endpoints`] and [`metrics`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`invocations`]: the plugins' invocation log, followed into the metrics.
//! - [`cluster`]: the node annotation, Events and the pod watch (only with `--node-name`).
//! - [`attachments`]: attachment records and the orphan reconciler.
//! - [`inspect`]: the node-side tools (`attachment`, `attachments`).

pub mod agent;
pub mod attachments;
pub mod cli;
pub mod cluster;
pub mod endpoints;
pub mod inspect;
pub mod install;
pub mod invocations;
pub mod metrics;
pub mod probe;
pub mod watch;

pub use agent::{run, AgentError};
pub use cli::Args;

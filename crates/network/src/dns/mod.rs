//! The cluster DNS server: a small authoritative server for the cluster domain
//! (UDP and TCP) that forwards every other name to the node's resolvers.
//!
//! - [`wire`]: the DNS message format.
//! - [`zone`]: Services/EndpointSlices → answers.
//! - [`server`]: the sockets, forwarding, and the watchers that keep the zone current.

pub mod server;
pub mod wire;
pub mod zone;

pub use server::{run_watchers, upstreams_from_resolv_conf, DnsServer, Handler, Outcome};
pub use zone::{ServiceRecord, Zone};

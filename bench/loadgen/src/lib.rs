//! Load generator for the navarch API server benchmark.
//!
//! Drives a running server over HTTPS (client-certificate auth, HTTP/2 or
//! HTTP/1.1 keep-alive) with the scenarios of `bench/apiserver.sh`:
//!
//! - [`crud`]: N persistent connections doing configmap creates or gets, with
//!   latency histograms;
//! - [`watch`]: many open pod watches while pods are created at a fixed rate,
//!   measuring how far behind each event arrives (read by a task per watch,
//!   or by [`watch_epoll`]'s one thread);
//! - [`floor`]: the watch step's fan-out with no API server behind it, as a
//!   baseline (binary `watchfloor`).
//!
//! Results are printed as `name value` lines by the `loadgen` binary.

pub mod client;
pub mod crud;
pub mod error;
pub mod floor;
pub mod hist;
pub mod objects;
pub mod watch;
pub mod watch_epoll;

pub use client::{Conn, Protocol, Target};
pub use error::Error;
pub use hist::Histogram;

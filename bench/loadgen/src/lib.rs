//! Load generator for the navarch API server benchmark.
//!
//! Drives a running server over HTTPS (client-certificate auth, HTTP/2 or
//! HTTP/1.1 keep-alive) with the scenarios of `bench/apiserver.sh`:
//!
//! - [`crud`]: N persistent connections doing configmap creates or gets, with
//!   latency histograms;
//! - [`watch`]: many open pod watches while pods are created at a fixed rate,
//!   measuring how far behind each event arrives.
//!
//! Results are printed as `name value` lines by the `loadgen` binary.

pub mod client;
pub mod crud;
pub mod error;
pub mod hist;
pub mod objects;
pub mod watch;

pub use client::{Conn, Protocol, Target};
pub use error::Error;
pub use hist::Histogram;

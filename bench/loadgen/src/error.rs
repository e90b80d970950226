//! Errors of the load generator.

use hyper::StatusCode;

/// Everything that can go wrong while generating load.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading PKI files or a socket failed.
    #[error("I/O error on {what}: {source}")]
    Io {
        /// What was being read or connected.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("bad PEM file {0}")]
    Pem(String),
    /// TLS configuration was rejected.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The HTTP layer failed (connection reset, protocol error...).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// A request could not be built.
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The server answered with an unexpected status.
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
        /// Status received.
        status: StatusCode,
        /// Start of the response body.
        body: String,
    },
    /// A response body was not the JSON expected.
    #[error("unexpected response: {0}")]
    Response(String),
    /// A scenario parameter is out of range.
    #[error("invalid parameter: {0}")]
    Param(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

//! navarch-api: the Kubernetes API as data.
//!
//! - [`catalog`]: the served resource types (from `k8s-openapi`, Kubernetes 1.33).
//! - [`selectors`]: label and field selectors.
//! - [`patch`]: JSON patch, JSON merge patch, strategic merge patch.
//! - [`defaults`] and [`validation`]: per-kind defaulting and validation with field paths.
//! - [`protobuf`]: decoding `application/vnd.kubernetes.protobuf` request bodies.

pub mod catalog;
pub mod patch;
pub mod selectors;

pub mod defaults;
pub mod protobuf;
pub mod validation;

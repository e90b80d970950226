//! Embedded backend (in progress)

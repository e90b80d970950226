//! navarch-apiserver

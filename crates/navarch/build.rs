//! Link `navarch` as a position-dependent executable (`-no-pie`).
//!
//! Every container has a shim process (`navarch internal-shim`, the same
//! binary). A PIE binary has about 1 MB of `.data.rel.ro` that the dynamic
//! loader writes to at start (relocations), so each shim gets its own
//! private copy of it. Linked without PIE, those pages stay clean and are
//! shared by all shims: about 1 MB less per container. Go binaries (runc,
//! containerd's shims) are linked without PIE by default on amd64 too.
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}

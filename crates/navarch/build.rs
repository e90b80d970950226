//! Link settings for the `navarch` binary.
//!
//! **No PIE.** Every container has a shim process (`navarch internal-shim`,
//! the same binary). A PIE binary has about 1 MB of `.data.rel.ro` that the
//! dynamic loader writes to at start (relocations), so each shim gets its own
//! private copy of it. Linked without PIE, those pages stay clean and are
//! shared by all shims: about 1 MB less per container. Go binaries (runc,
//! containerd's shims) are linked without PIE by default on amd64 too.
//!
//! **Function order** (release builds). `link/symbol-order.txt.gz` lists the
//! functions that start-up and an idle server execute, recorded by
//! `scripts/symbol-order.sh`. The linker (LLD, Rust's default on
//! x86_64-linux since 1.90) places them first and next to each other, so the
//! code an idle process keeps mapped is those few megabytes rather than every
//! 64 KiB window of the 37 MB text that one of them falls in. Names the build
//! no longer has are skipped; a stale list only loses the benefit. Set
//! `NAVARCH_SYMBOL_ORDER=0` to link without it. See `docs/binary-layout.md`.
use std::io::Read;
use std::path::{Path, PathBuf};

const ORDER_FILE: &str = "link/symbol-order.txt.gz";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=NAVARCH_SYMBOL_ORDER");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-no-pie");

    if var("PROFILE") != "release" || var("NAVARCH_SYMBOL_ORDER") == "0" {
        return;
    }
    if var("CARGO_CFG_TARGET_ARCH") != "x86_64" || !rustc_links_with_lld() {
        println!(
            "cargo:warning=linking navarch without the function order (needs LLD: rustc >= 1.90 on x86_64)"
        );
        return;
    }
    match unpack_order_file(Path::new(ORDER_FILE)) {
        Ok(path) => {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                path.display()
            );
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
        Err(e) => println!("cargo:warning=linking navarch without the function order: {e}"),
    }
}

/// Whether rustc links x86_64-linux-gnu with its bundled LLD by default
/// (stable since Rust 1.90).
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = std::process::Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(release) = text.lines().find_map(|l| l.strip_prefix("release: ")) else {
        return false;
    };
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}

fn unpack_order_file(gz: &Path) -> std::io::Result<PathBuf> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(gz)?).read_to_string(&mut text)?;
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(std::io::Error::other)?)
        .join("symbol-order.txt");
    std::fs::write(&out, text)?;
    Ok(out)
}

//! Test helper: `navarch-runtime-shim internal-shim ...` runs the container shim,
//! as `navarch internal-shim ...` does in production.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(navarch_runtime::shim_main(&args));
}

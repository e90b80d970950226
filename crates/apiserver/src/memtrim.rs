//! Returning freed heap memory to the system.
//!
//! glibc's allocator keeps memory freed inside its heaps (and every per-thread
//! arena) until something asks it back; only the top of the main heap is
//! trimmed by itself. After a burst (1,000 watch connections, each with its TLS
//! and HTTP/2 buffers, opened and closed), tens of megabytes stay resident
//! though nothing uses them. A background thread asks the allocator to release
//! free pages now and then (`malloc_trim`, which walks free chunks only and
//! `madvise`s their pages away; it does not move live data).

use std::time::{Duration, Instant};

/// How often free heap pages are handed back.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    fn malloc_trim(pad: usize) -> std::ffi::c_int;
}

/// Release free heap pages to the system now. Returns whether the allocator
/// supports it (glibc on Linux); elsewhere it does nothing.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and may be called at any time
        // from any thread; it only releases memory that is free.
        unsafe {
            malloc_trim(0);
        }
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Start the background thread that calls [`trim`] every `period` (not on the
/// async workers: a trim holds each arena's lock while it walks it).
pub fn spawn_trimmer(period: Duration) -> std::io::Result<()> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("heap-trim".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            let t0 = Instant::now();
            trim();
            tracing::trace!(took_us = t0.elapsed().as_micros() as u64, "heap trimmed");
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_live_memory_intact() {
        let live: Vec<Vec<u8>> = (0..1000).map(|i| vec![(i % 251) as u8; 4096]).collect();
        let garbage: Vec<Vec<u8>> = (0..1000).map(|_| vec![7u8; 4096]).collect();
        drop(garbage);
        assert_eq!(trim(), cfg!(all(target_os = "linux", target_env = "gnu")));
        for (i, v) in live.iter().enumerate() {
            assert!(v.iter().all(|b| *b == (i % 251) as u8));
        }
        assert!(spawn_trimmer(Duration::from_secs(3600)).is_ok());
    }
}

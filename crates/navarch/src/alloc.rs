//! The process's allocator: mimalloc instead of glibc's malloc.
//!
//! The API server turns every request, stored object and watch event into
//! many small `serde_json::Value` nodes, from several threads at once. Under
//! glibc about a quarter of the server's CPU went to `malloc`/`free` (arena
//! locks, `malloc_consolidate`); with mimalloc the end-to-end scheduling bench
//! binds 1.5x the pods per second on the same machine (docs/performance.md).
//!
//! One option differs from mimalloc's default: arenas are not committed
//! eagerly. With eager commit (mimalloc's default on Linux) an idle server
//! held 27 MB of anonymous memory instead of 9 MB.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_e` (the
/// bindings name no constant for it).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Runs [`configure`] while the process loads, before `main` and before
/// the Rust runtime's first allocation: mimalloc reserves its first arena on
/// that allocation, with the options in force then.
#[used]
#[link_section = ".init_array"]
static CONFIGURE_AT_LOAD: extern "C" fn() = configure;

/// Apply navarch's allocator options; an option set in the environment
/// (`MIMALLOC_ARENA_EAGER_COMMIT`) wins.
extern "C" fn configure() {
    // No allocation here: the environment is read with libc's getenv.
    // SAFETY: the name is a NUL-terminated literal; getenv only reads.
    let set = unsafe { !libc_getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() };
    if !set {
        // SAFETY: mi_option_set stores an option value; it takes no pointers
        // and may be called at any time.
        unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) };
    }
}

extern "C" {
    #[link_name = "getenv"]
    fn libc_getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
}

//! The global allocator: mimalloc instead of glibc's malloc. A request allocates on a reactor
//! thread and frees on a blocking-pool thread (and back), which glibc serves through
//! per-arena locks and consolidation: 12 % of the server's CPU under the profile benchmark
//! (docs/PERFORMANCE.md). Declared in the library, so `authd`, `authd-bench` and the tests
//! all run on the same allocator.

use std::ffi::{c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

/// `mi_option_e` of the bundled mimalloc 3 (`libmimalloc-sys`, `c_src/mimalloc/v3/include/
/// mimalloc.h`); the `extended` bindings carry mimalloc 2's numbering, so these are declared
/// here and a test checks them against the library's defaults.
const PURGE_DELAY: c_int = 15;
const ALLOW_THP: c_int = 43;

/// Keeps the resident set as small as it was on glibc: no transparent huge pages for the
/// arenas (each touched 2 MiB would count whole), and freed pages go back to the OS at once
/// rather than after a second. With mimalloc's defaults the server's peak RSS was 35 MB idle
/// and 99 MB after 100k sessions; with these, 18 and 57 MB (glibc: 17 and 55 MB).
pub fn tune() {
    // SAFETY: plain setters of process-wide integer options, valid at any time.
    unsafe {
        mi_option_set(ALLOW_THP, 0);
        mi_option_set(PURGE_DELAY, 0);
    }
}

/// The current value of an option.
#[cfg(test)]
fn option(option: c_int) -> c_long {
    // SAFETY: a plain getter.
    unsafe { mi_option_get(option) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_numbers_match_the_linked_mimalloc() {
        // Unit tests don't tune at load, so the options hold mimalloc's defaults (options.c:
        // allow_thp 1, purge_delay 1000); a wrong number would read another option's.
        assert_eq!(option(ALLOW_THP), 1);
        assert_eq!(option(PURGE_DELAY), 1000);
        tune();
        assert_eq!(option(ALLOW_THP), 0);
        assert_eq!(option(PURGE_DELAY), 0);
    }
}

/// Runs `tune` when the binary is loaded, before the first allocation reserves an arena (not in
/// the library's own unit tests, which check the defaults first).
#[cfg(all(target_os = "linux", not(test)))]
#[used]
#[link_section = ".init_array"]
static TUNE_AT_LOAD: extern "C" fn() = {
    extern "C" fn tune_at_load() {
        tune();
    }
    tune_at_load
};

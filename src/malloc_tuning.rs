//! Keeps podstat's resident memory close to what it holds between scrapes.
//!
//! Every collection allocates a few buffers of 100 KiB to a few MiB (the gzip body, chunk
//! buffers, the snapshot) and frees them when the next one replaces them. glibc's malloc
//! raises its mmap threshold each time such a block is freed ("dynamic threshold"), so after
//! the first scrapes they come from the heap and their pages stay resident in freed chunks:
//! measured at 1000 containers, VmRSS 15.8 MiB with the defaults against 13.8 MiB with a
//! fixed 128 KiB mmap and trim threshold (benches/scrape.sh, `GLIBC_TUNABLES` first). The
//! price is one mmap/munmap pair per large buffer per scrape, and their page faults: tens of
//! microseconds at 1000 containers, against a scrape of ~100 ms. Below 1 MiB the gzip body's
//! buffer is handed from one scrape to the next instead (`agent::RecycledBody`): at 100
//! containers its faults were ~2 % of a ~8 ms scrape.
//!
//! Operators can still override this with `GLIBC_TUNABLES`, which glibc reads first: the
//! thresholds are only set here when the environment does not name them.

/// Above this, allocations get their own mapping and go back to the kernel when freed.
const THRESHOLD: i32 = 128 * 1024;

/// Applies the fixed thresholds (glibc only; a no-op elsewhere, e.g. musl).
pub fn apply() {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if tunables.contains("mmap_threshold") || tunables.contains("trim_threshold") {
        return;
    }
    set_thresholds();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() {
    // SAFETY: mallopt only changes malloc's parameters; it is called before any thread exists
    // (first thing in main), and its result (1 ok, 0 rejected) only tells whether it applied.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD) == 1
    };
    if !ok {
        eprintln!("podstat: glibc rejected the malloc thresholds; memory use may be higher");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() {}

/// Gives freed memory back to the kernel after a one-off large allocation (a pod list's body
/// and its decode, on a blocking-pool thread whose malloc arena glibc otherwise keeps at its
/// high-water mark: after a 50,000-pod list RSS stayed at 193 MB with the node back at 100
/// pods). Costs a walk of the free lists, ~1 ms; called once per decoded list.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free pages to the kernel; it is thread-safe (it takes
    // each arena's lock) and touches no memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

//! Cache hints shared by the encoder and the fast decoder. They change
//! timing only, never results.

/// Asks the CPU to bring every 64-byte line of `data` into the cache, where
/// the CPU can be asked (x86-64); elsewhere nothing.
#[inline(always)]
pub(crate) fn prefetch(data: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(64) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of the x86-64 baseline, and a prefetch is a
        // hint that reads nothing and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

//! Cache and memory hints shared by the encoder, the fast decoder and the
//! checkpoint writer. They change timing only, never results.

/// Asks the CPU to bring every 64-byte line of `data` into the cache, where
/// the CPU can be asked (x86-64); elsewhere nothing.
#[inline(always)]
pub(crate) fn prefetch(data: &[u8]) {
    for line in data.chunks(64) {
        prefetch_line(line.as_ptr());
    }
}

/// Asks the CPU to bring the 64-byte line holding `p` into the cache. Any
/// address will do, inside an allocation or not: a prefetch reads nothing
/// and never faults.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of the x86-64 baseline, and a prefetch is a
        // hint that reads nothing and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A vector of `len` zero bytes, in 2 MiB pages where it is large enough
/// (see `huge_pages` below): an output buffer that a large decode then
/// fills with a few hundred page faults instead of one per 4 KiB.
pub fn zeroed_bytes(len: usize) -> Vec<u8> {
    let mut v = huge_vec(len);
    v.resize(len, 0);
    v
}

/// An empty vector with room for `capacity` elements, in 2 MiB pages where
/// it is large enough (see [`huge_pages`]).
pub(crate) fn huge_vec<T>(capacity: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(capacity);
    huge_pages(&mut v);
    v
}

/// Below this many bytes an allocation is not worth 2 MiB pages.
#[cfg(target_os = "linux")]
const HUGE_MIN: usize = 4 << 20;

/// Asks Linux to back the whole 2 MiB pages inside `v`'s allocation with
/// transparent huge pages, where the system leaves that to the program
/// (`madvise` mode). A large output vector is otherwise filled one 4 KiB page
/// fault at a time, each costing about as much as coding its page; with 2 MiB
/// pages the faults all but vanish. Call it before the first write to the
/// capacity. Contents are never changed; elsewhere, and on small vectors,
/// nothing happens.
pub(crate) fn huge_pages<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = v.capacity() * size_of::<T>();
        if bytes < HUGE_MIN {
            return;
        }
        let start = v.as_mut_ptr() as usize;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if hi > lo {
            // SAFETY: `lo..hi` lies inside the vector's allocation, which this
            // function borrows mutably; MADV_HUGEPAGE only changes how that
            // memory is backed, never what it holds. A failure (an old kernel,
            // THP disabled) leaves things as they were, so it is ignored.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

//! Slice reads for kernel logic that compile to predicated instructions on
//! the GPU instead of branches.
//!
//! ptxas guards every warp vote and shuffle (`BRA.DIV`, `BSSY`/`BSYNC`) once
//! any branch it cannot prove warp-uniform sits in the loop nest around
//! them, and a read of a word that may be past the end (a branch around the
//! load) is such a branch. Here the check becomes the load's predicate.

/// A word type the GPU can load with one predicated instruction.
pub trait Word: Copy {
    /// `s[i]`, or zero when `i` is out of range.
    fn get_or_zero(s: &[Self], i: usize) -> Self;
}

impl Word for u32 {
    #[inline(always)]
    fn get_or_zero(s: &[u32], i: usize) -> u32 {
        #[cfg(target_arch = "nvptx64")]
        {
            // SAFETY: the load happens only for `i < s.len()`, inside `s`;
            // kernel inputs are read-only for the launch.
            unsafe { crate::arch::ld_global_u32_if(s.as_ptr().wrapping_add(i), i < s.len()) }
        }
        #[cfg(not(target_arch = "nvptx64"))]
        {
            s.get(i).copied().unwrap_or(0)
        }
    }
}

impl Word for u64 {
    #[inline(always)]
    fn get_or_zero(s: &[u64], i: usize) -> u64 {
        #[cfg(target_arch = "nvptx64")]
        {
            // SAFETY: as for `u32`.
            unsafe { crate::arch::ld_global_u64_if(s.as_ptr().wrapping_add(i), i < s.len()) }
        }
        #[cfg(not(target_arch = "nvptx64"))]
        {
            s.get(i).copied().unwrap_or(0)
        }
    }
}

/// `s[i]`, or zero when `i` is out of range.
#[inline(always)]
pub fn get_or_zero<T: Word>(s: &[T], i: usize) -> T {
    T::get_or_zero(s, i)
}

/// `*b = get_or_zero(s, i)` when `second`, else `*a = get_or_zero(s, i)`.
/// On the GPU the word is loaded straight into its register, so nothing
/// waits for the load until that register is read.
#[inline(always)]
pub fn get_or_zero_into(a: &mut u32, b: &mut u32, second: bool, s: &[u32], i: usize) {
    #[cfg(target_arch = "nvptx64")]
    {
        // SAFETY: the load happens only for `i < s.len()`, inside `s`; kernel
        // inputs are read-only for the launch.
        unsafe { crate::arch::ld_global_u32_either(a, b, second, s.as_ptr().wrapping_add(i), i < s.len()) }
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        *(if second { b } else { a }) = get_or_zero(s, i);
    }
}

/// `*dst = get_or_zero(s, i)` when `load` holds; `*dst` unchanged otherwise.
/// On the GPU the word is loaded straight into `dst`, so nothing waits for
/// the load until `dst` is read. The index is 32 bits, and so is the bounds
/// check: words past `u32::MAX` read as zero.
#[inline(always)]
pub fn load_if(dst: &mut u32, load: bool, s: &[u32], i: u32) {
    // Loop-invariant in a caller's loop: computed once.
    let len = s.len().min(u32::MAX as usize) as u32;
    #[cfg(target_arch = "nvptx64")]
    {
        // SAFETY: the load happens only for `i < len <= s.len()`, inside `s`;
        // kernel inputs are read-only for the launch.
        unsafe { crate::arch::ld_global_u32_update(dst, load, s.as_ptr().wrapping_add(i as usize), i < len) }
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        if load {
            *dst = if i < len { s[i as usize] } else { 0 };
        }
    }
}

/// Asks for the cache line holding `s[i]` in the L1 cache (or, with `L2`,
/// the L2 cache) when `i` is in range; nothing on the host. No instruction
/// waits for a prefetch: it loads into no register.
#[inline(always)]
pub fn prefetch<const L2: bool, T>(s: &[T], i: usize) {
    #[cfg(target_arch = "nvptx64")]
    {
        // SAFETY: the prefetch happens only for `i < s.len()`, inside `s`.
        unsafe { crate::arch::prefetch_if::<L2, T>(s.as_ptr().wrapping_add(i), i < s.len()) }
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        let _ = (s, i);
    }
}

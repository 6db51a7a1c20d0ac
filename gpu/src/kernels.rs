//! PTX entry points. Each one only turns raw launch arguments into the safe
//! types the generic kernel logic takes; the host launcher has validated every
//! pointer and length before the launch.

use crate::arch;
use crate::decode::{ErrorReport, GroupInput};
use crate::format::LANE_RUN;
use crate::thread::{GlobalOut, GlobalRuns, Runs, Thread};

/// [`Thread`] backed by the real special registers and shared memory.
struct Gpu;

impl Thread for Gpu {
    #[inline(always)]
    fn thread_idx(&self) -> u32 {
        arch::thread_idx()
    }
    #[inline(always)]
    fn block_idx(&self) -> u32 {
        arch::block_idx()
    }
    #[inline(always)]
    fn block_dim(&self) -> u32 {
        arch::block_dim()
    }
    #[inline(always)]
    fn grid_dim(&self) -> u32 {
        arch::grid_dim()
    }
    #[inline(always)]
    fn sync_threads(&self) {
        arch::sync_threads()
    }
    #[inline(always)]
    fn shared_len(&self) -> usize {
        arch::dynamic_smem_bytes() as usize / 4
    }
    #[inline(always)]
    fn shared_load(&self, i: usize) -> u32 {
        if i >= self.shared_len() {
            arch::trap();
        }
        // SAFETY: `i` is inside the dynamic shared allocation (checked above).
        unsafe { arch::shared_base().add(i).read_volatile() }
    }
    #[inline(always)]
    fn shared_store(&self, i: usize, v: u32) {
        if i >= self.shared_len() {
            arch::trap();
        }
        // SAFETY: as in `shared_load`.
        unsafe { arch::shared_base().add(i).write_volatile(v) }
    }
    #[inline(always)]
    fn shared_load_u16(&self, i: usize) -> u16 {
        if i >= self.shared_len() * 2 {
            arch::trap();
        }
        // SAFETY: half-word `i` is inside the dynamic shared allocation (checked above).
        unsafe { arch::ld_shared_u16(i as u32) }
    }
    #[inline(always)]
    fn shared_load_pair(&self, i: usize) -> [u32; 2] {
        if i >= self.shared_len() / 2 {
            arch::trap();
        }
        // SAFETY: words `2i` and `2i + 1` are inside the dynamic shared allocation (checked above).
        unsafe { arch::ld_shared_pair(i as u32) }
    }
    #[inline(always)]
    fn lane_id(&self) -> u32 {
        arch::lane_id()
    }
    #[inline(always)]
    fn ballot(&self, pred: bool) -> u32 {
        arch::ballot(pred)
    }
    #[inline(always)]
    fn shfl(&self, v: u32, src_lane: u32) -> u32 {
        arch::shfl(v, src_lane)
    }
}

/// A run of [`LANE_RUN`] bf16 values as one vector store writes it.
#[repr(C, align(16))]
struct Run([u32; LANE_RUN / 2]);

/// A device buffer written through a raw pointer with a bounds check.
struct DeviceOut<T> {
    ptr: *mut T,
    len: usize,
}

impl<T: Copy> GlobalOut<T> for DeviceOut<T> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }
    #[inline(always)]
    fn store(&self, i: usize, v: T) {
        if i >= self.len {
            arch::trap();
        }
        // SAFETY: `ptr` points to `len` writable elements (host-validated) and
        // `i < len`; each index is written by one thread.
        unsafe { self.ptr.add(i).write(v) }
    }
}

impl GlobalRuns for DeviceOut<u16> {
    type Runs<'a> = DeviceRuns;
    #[inline(always)]
    fn runs(&self, start: usize, count: u32) -> Option<DeviceRuns> {
        let end = (count as usize).checked_mul(LANE_RUN)?.checked_add(start)?;
        let ptr = self.ptr.wrapping_add(start);
        if !start.is_multiple_of(LANE_RUN) || end > self.len || !(ptr as usize).is_multiple_of(align_of::<Run>()) {
            return None;
        }
        Some(DeviceRuns { ptr: ptr.cast(), count })
    }
    #[inline(always)]
    fn store_if(&self, i: usize, v: u16, c: bool) {
        // SAFETY: `ptr` points to `len` writable elements (host-validated);
        // the store happens only for `i < len`, and each index is written by
        // one thread.
        unsafe { arch::st_global_u16_if(self.ptr.wrapping_add(i), v, c && i < self.len) }
    }
}

/// `count` aligned runs inside a [`DeviceOut`], checked when made: a store
/// costs one 32-bit compare, not the 64-bit bounds and alignment checks.
struct DeviceRuns {
    ptr: *mut Run,
    count: u32,
}

impl Runs for DeviceRuns {
    #[inline(always)]
    fn store(&self, k: u32, v: [u32; LANE_RUN / 2]) {
        // SAFETY: `GlobalRuns::runs` checked that all `count` runs lie in the
        // buffer and that `ptr` is aligned for `Run`; the store happens only
        // for `k < count`, and each run is written by one thread.
        unsafe { arch::st_global_v4_if(self.ptr.wrapping_add(k as usize).cast(), v, k < self.count) }
    }
}

/// Slice from a raw device pointer; an empty slice for `len == 0`.
///
/// SAFETY: the caller guarantees `ptr` points to `len` readable elements.
#[inline(always)]
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: see the function contract.
        unsafe { core::slice::from_raw_parts(ptr, len) }
    }
}

/// Defines a group decode kernel: an entry point that turns the raw launch
/// arguments into the safe types `$logic` takes. All kernels take the same
/// arguments, so the launcher passes one argument list to either.
macro_rules! group_kernel {
    ($(#[$doc:meta])* $name:ident => $logic:path) => {
        group_kernel! { $(#[$doc])* $name => $logic, u16 }
    };
    ($(#[$doc:meta])* $name:ident => $logic:path, $out:ty) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Each pointer points to its `*_len` readable (for `out`: writable)
        /// device elements, `out` is 16-byte aligned, and `error` points to two
        /// device `u32`s. The launcher checks these and validates every tensor
        /// before the launch; the kernel's own bounds checks then never fire.
        #[unsafe(no_mangle)]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $name(
            descs: *const u64,
            descs_len: usize,
            words: *const u32,
            words_len: usize,
            offsets: *const u32,
            offsets_len: usize,
            sign_mantissa: *const u64,
            sign_mantissa_len: usize,
            tables: *const u32,
            tables_len: usize,
            lane_index: *const u32,
            lane_index_len: usize,
            out: *mut $out,
            out_len: usize,
            error: *mut u32,
        ) {
            // SAFETY: guaranteed by the launcher (see above); `ErrorReport` is
            // two `AtomicU32`s (`repr(C)`, the layout of `[u32; 2]`), only
            // accessed atomically.
            let (g, error) = unsafe {
                (
                    GroupInput {
                        descs: slice(descs, descs_len),
                        words: slice(words, words_len),
                        offsets: slice(offsets, offsets_len),
                        sign_mantissa: slice(sign_mantissa, sign_mantissa_len),
                        tables: slice(tables, tables_len),
                        lane_index: slice(lane_index, lane_index_len),
                    },
                    &*error.cast::<ErrorReport>(),
                )
            };
            $logic(&Gpu, &g, &DeviceOut { ptr: out, len: out_len }, error);
        }
    };
}

group_kernel! {
    /// Group decode kernel for the warp layout: see [`crate::decode::decode_group`].
    df11_decode_group => crate::decode::decode_group
}

group_kernel! {
    /// Group decode kernel for the lanes layout: see
    /// [`crate::decode::decode_group_lanes`].
    df11_decode_group_lanes => crate::decode::decode_group_lanes
}

group_kernel! {
    /// Group decode kernel for the lanes9 layout: see
    /// [`crate::decode::decode_group_lanes9`].
    df11_decode_group_lanes9 => crate::decode::decode_group_lanes9
}

group_kernel! {
    /// The lane index kernel: see [`crate::decode::index_group_lanes`]; `out`
    /// is the index (`u32` entries), `lane_index` unused.
    df11_index_group_lanes => crate::decode::index_group_lanes, u32
}

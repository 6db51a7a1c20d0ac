//! PTX entry points. Each one only turns raw launch arguments into the safe
//! types the generic kernel logic takes; the host launcher has validated every
//! pointer and length before the launch.

use crate::arch;
use crate::thread::{GlobalOut, Thread};

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
}

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

/// Demo kernel: see [`crate::demo::reverse_tiles`].
///
/// # Safety
/// `input` and `output` point to `len` device `u32`s; the block has
/// `blockDim.x * 4` bytes of dynamic shared memory.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn df11_demo_reverse_tiles(input: *const u32, output: *mut u32, len: usize) {
    // SAFETY: guaranteed by the launcher (see above).
    let input = unsafe { slice(input, len) };
    crate::demo::reverse_tiles(&Gpu, input, &DeviceOut { ptr: output, len });
}

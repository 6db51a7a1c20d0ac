//! NVPTX intrinsics: the only code in df11 that touches raw asm.
//!
//! Each function is a single PTX instruction (or a short fixed sequence) with
//! no memory effects beyond what its name says.

use core::arch::{asm, global_asm};

// Rust has no shared-memory statics. Declare the block's dynamic shared memory
// at file scope in PTX and reach it through a generic address (`cvta.shared`).
global_asm!(".extern .shared .align 16 .b8 df11_smem[];");

macro_rules! sreg {
    ($name:ident, $reg:literal) => {
        #[inline(always)]
        pub fn $name() -> u32 {
            let v: u32;
            // SAFETY: reading a special register has no side effects.
            unsafe { asm!(concat!("mov.u32 {}, ", $reg, ";"), out(reg32) v, options(pure, nomem, nostack)) };
            v
        }
    };
}

sreg!(thread_idx, "%tid.x");
sreg!(block_idx, "%ctaid.x");
sreg!(block_dim, "%ntid.x");
sreg!(grid_dim, "%nctaid.x");
sreg!(dynamic_smem_bytes, "%dynamic_smem_size");

/// `__syncthreads()`.
#[inline(always)]
pub fn sync_threads() {
    // SAFETY: a block-wide barrier; callers keep it uniform across the block.
    unsafe { asm!("bar.sync 0;", options(nostack)) };
}

/// Generic pointer to the start of the block's dynamic shared memory.
#[inline(always)]
pub fn shared_base() -> *mut u32 {
    let p: u64;
    // SAFETY: takes the address of the shared window; no memory is touched.
    unsafe {
        asm!(
            "mov.u64 {p}, df11_smem;",
            "cvta.shared.u64 {p}, {p};",
            p = out(reg64) p,
            options(pure, nomem, nostack)
        )
    };
    p as *mut u32
}

/// Aborts the kernel; the launch then fails with an error the host can see.
#[inline(always)]
pub fn trap() -> ! {
    // SAFETY: `trap` ends the thread (and the launch); nothing follows it.
    unsafe { asm!("trap;", options(noreturn, nostack)) }
}

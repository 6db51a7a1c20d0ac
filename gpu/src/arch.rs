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

sreg!(lane_id, "%laneid");

/// `prmt.b32` in its default mode: byte `i` of the result is byte `n & 7` of
/// `b:a` (`a` holds bytes 0..4), `n = sel >> 4 * i & 15`, or, when `n & 8`
/// is set, that byte's top bit copied into all eight.
#[inline(always)]
pub fn prmt(a: u32, b: u32, sel: u32) -> u32 {
    let d: u32;
    // SAFETY: a register-only byte permutation.
    unsafe {
        asm!("prmt.b32 {d}, {a}, {b}, {s};", d = out(reg32) d, a = in(reg32) a, b = in(reg32) b, s = in(reg32) sel,
            options(pure, nomem, nostack))
    };
    d
}

// Warp intrinsics are declared as LLVM intrinsics rather than inline asm: LLVM
// knows they are `convergent`, so no optimisation moves them into divergent
// control flow, which the `*.sync` full-mask forms forbid.
unsafe extern "C" {
    #[link_name = "llvm.nvvm.vote.ballot.sync"]
    fn vote_ballot_sync(mask: u32, pred: bool) -> u32;
    #[link_name = "llvm.nvvm.shfl.sync.idx.i32"]
    fn shfl_sync_idx(mask: u32, v: u32, src_lane: u32, clamp: u32) -> u32;
}

/// All 32 lanes take part in warp operations.
const FULL_MASK: u32 = u32::MAX;

/// `vote.sync.ballot.b32` with a full mask.
#[inline(always)]
pub fn ballot(pred: bool) -> u32 {
    // SAFETY: a register-only warp vote; callers reach it convergently.
    unsafe { vote_ballot_sync(FULL_MASK, pred) }
}

/// `shfl.sync.idx.b32` with a full mask over the whole warp.
#[inline(always)]
pub fn shfl(v: u32, src_lane: u32) -> u32 {
    // `c = 0x1f`: clamp to the warp's 32 lanes (segment mask 0), i.e. `src_lane % 32`.
    // SAFETY: a register-only warp exchange; callers reach it convergently.
    unsafe { shfl_sync_idx(FULL_MASK, v, src_lane, 0x1f) }
}

/// The `u16` at half-word index `i` of the block's dynamic shared memory,
/// read with `ld.shared` (a generic load would first have to find the window).
///
/// # Safety
/// `2 * i + 2` must not exceed the dynamic shared allocation.
#[inline(always)]
pub unsafe fn ld_shared_u16(i: u32) -> u16 {
    let v: u16;
    // SAFETY: the caller keeps `i` in bounds; `readonly` (not `nomem`) keeps
    // the load after the barriers that publish the data. The scaling is done
    // here so that ptxas sees `base + 2 * i` and makes one `LEA` of it.
    unsafe {
        asm!(
            "{{ .reg .u32 a; mov.u32 a, df11_smem; mad.lo.u32 a, {i}, 2, a; ld.shared.u16 {v}, [a]; }}",
            i = in(reg32) i,
            v = out(reg16) v,
            options(pure, readonly, nostack)
        )
    };
    v
}

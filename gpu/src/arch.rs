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

/// `shl.b64`: `x << s`, 0 for `s >= 64` (PTX clamps the shift). A Rust shift
/// must be proven in range or masked, which costs an instruction.
#[inline(always)]
pub fn shl_b64(x: u64, s: u32) -> u64 {
    let d: u64;
    // SAFETY: a register-only shift, defined for every `s`.
    unsafe {
        asm!("shl.b64 {d}, {x}, {s};", d = out(reg64) d, x = in(reg64) x, s = in(reg32) s,
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

/// When `load` holds, `*dst = *p`, or 0 when `c` does not hold; otherwise
/// `*dst` is left alone. Predicated moves and a predicated load straight into
/// `dst`: with a select, the load would go to a temporary and the select
/// would wait for it.
///
/// # Safety
/// As [`ld_global_u32_if`].
#[inline(always)]
pub unsafe fn ld_global_u32_update(dst: &mut u32, load: bool, p: *const u32, c: bool) {
    // SAFETY: the load only happens when `load` and `c` hold (the caller's contract).
    unsafe {
        asm!(
            "{{ .reg .pred l, z, g; .reg .u64 a;",
            "setp.ne.u32 l, {l}, 0; setp.ne.and.u32 g, {c}, 0, l; setp.eq.and.u32 z, {c}, 0, l;",
            "cvta.to.global.u64 a, {p};",
            "@z mov.u32 {d}, 0; @g ld.global.u32 {d}, [a]; }}",
            l = in(reg32) u32::from(load),
            c = in(reg32) u32::from(c),
            p = in(reg64) p,
            d = inout(reg32) *dst,
            options(pure, readonly, nostack)
        )
    };
}

/// Words `2i` and `2i + 1` of the block's dynamic shared memory, read with
/// one `ld.shared.v2.u32`.
///
/// # Safety
/// `8 * i + 8` must not exceed the dynamic shared allocation.
#[inline(always)]
pub unsafe fn ld_shared_pair(i: u32) -> [u32; 2] {
    let (a, b): (u32, u32);
    // SAFETY: as in `ld_shared_u16`.
    unsafe {
        asm!(
            "{{ .reg .u32 a; mov.u32 a, df11_smem; mad.lo.u32 a, {i}, 8, a; ld.shared.v2.u32 {{{x}, {y}}}, [a]; }}",
            i = in(reg32) i,
            x = out(reg32) a,
            y = out(reg32) b,
            options(pure, readonly, nostack)
        )
    };
    [a, b]
}

/// Asks for the line holding `*p` in the L1 (`L2 == false`) or L2 cache when
/// `c` holds: a predicated `prefetch`, which loads into no register, so no
/// instruction waits for it.
///
/// # Safety
/// When `c` holds, `p` must point into a global allocation.
#[inline(always)]
pub unsafe fn prefetch_if<const L2: bool, T>(p: *const T, c: bool) {
    macro_rules! prefetch {
        ($level:literal) => {
            asm!(
                concat!(
                    "{{ .reg .pred p; .reg .u64 g; setp.ne.u32 p, {c}, 0; cvta.to.global.u64 g, {a}; @p prefetch.global.",
                    $level,
                    " [g]; }}"
                ),
                c = in(reg32) u32::from(c),
                a = in(reg64) p,
                options(nostack, readonly)
            )
        };
    }
    // SAFETY: a prefetch has no architectural effect; the caller keeps the
    // address inside an allocation.
    unsafe { if L2 { prefetch!("L2") } else { prefetch!("L1") } }
}

/// `*p` when `c` holds, else 0: one predicated `ld.global`, not a branch
/// around a load (see `crate::mem` for why).
///
/// # Safety
/// When `c` holds, `p` must point to a readable, aligned global `u32` that no
/// thread writes during the launch.
#[inline(always)]
pub unsafe fn ld_global_u32_if(p: *const u32, c: bool) -> u32 {
    let v: u32;
    // SAFETY: the load only happens when `c` holds (the caller's contract).
    unsafe {
        asm!(
            "{{ .reg .pred p; .reg .u64 g; setp.ne.u32 p, {c}, 0; cvta.to.global.u64 g, {a}; mov.u32 {v}, 0; @p ld.global.u32 {v}, [g]; }}",
            c = in(reg32) u32::from(c),
            a = in(reg64) p,
            v = out(reg32) v,
            options(pure, readonly, nostack)
        )
    };
    v
}

/// As [`ld_global_u32_if`], for a `u64`.
///
/// # Safety
/// As [`ld_global_u32_if`], for a `u64`.
#[inline(always)]
pub unsafe fn ld_global_u64_if(p: *const u64, c: bool) -> u64 {
    let v: u64;
    // SAFETY: the load only happens when `c` holds (the caller's contract).
    unsafe {
        asm!(
            "{{ .reg .pred p; .reg .u64 g; setp.ne.u32 p, {c}, 0; cvta.to.global.u64 g, {a}; mov.u64 {v}, 0; @p ld.global.u64 {v}, [g]; }}",
            c = in(reg32) u32::from(c),
            a = in(reg64) p,
            v = out(reg64) v,
            options(pure, readonly, nostack)
        )
    };
    v
}

/// Stores `v` at `p` when `c` holds: one predicated `st.global.v4.b32`.
///
/// # Safety
/// When `c` holds, `p` must point to 16 writable, 16-byte aligned bytes of
/// global memory that no other thread accesses during the launch.
#[inline(always)]
pub unsafe fn st_global_v4_if(p: *mut [u32; 4], v: [u32; 4], c: bool) {
    // SAFETY: the store happens only when `c` holds (the caller's contract).
    unsafe {
        asm!(
            "{{ .reg .pred p; .reg .u64 g; setp.ne.u32 p, {c}, 0; cvta.to.global.u64 g, {a}; @p st.global.v4.b32 [g], {{{v0}, {v1}, {v2}, {v3}}}; }}",
            c = in(reg32) u32::from(c),
            a = in(reg64) p,
            v0 = in(reg32) v[0],
            v1 = in(reg32) v[1],
            v2 = in(reg32) v[2],
            v3 = in(reg32) v[3],
            options(nostack)
        )
    };
}

/// Stores `v` at `p` when `c` holds: one predicated `st.global.u16`.
///
/// # Safety
/// When `c` holds, `p` must point to a writable, aligned global `u16` that no
/// other thread accesses during the launch.
#[inline(always)]
pub unsafe fn st_global_u16_if(p: *mut u16, v: u16, c: bool) {
    // SAFETY: the store happens only when `c` holds (the caller's contract).
    unsafe {
        asm!(
            "{{ .reg .pred p; .reg .u64 g; setp.ne.u32 p, {c}, 0; cvta.to.global.u64 g, {a}; @p st.global.u16 [g], {v}; }}",
            c = in(reg32) u32::from(c),
            a = in(reg64) p,
            v = in(reg16) v,
            options(nostack)
        )
    };
}

/// `*b = *p` when `second`, else `*a = *p`, or 0 instead of `*p` when `c`
/// does not hold: predicated moves and loads straight into the two
/// registers. Written with a select, a branch-free version would load into
/// a temporary and wait for the load to select from it.
///
/// # Safety
/// As [`ld_global_u32_if`].
#[inline(always)]
pub unsafe fn ld_global_u32_either(a: &mut u32, b: &mut u32, second: bool, p: *const u32, c: bool) {
    // SAFETY: the load only happens when `c` holds (the caller's contract).
    unsafe {
        asm!(
            "{{ .reg .pred f, pa, pb; .reg .u64 g;",
            "setp.ne.u32 f, {s}, 0; setp.ne.and.u32 pb, {c}, 0, f; setp.ne.and.u32 pa, {c}, 0, !f;",
            "cvta.to.global.u64 g, {p};",
            "@f mov.u32 {b}, 0; @!f mov.u32 {a}, 0;",
            "@pb ld.global.u32 {b}, [g]; @pa ld.global.u32 {a}, [g]; }}",
            s = in(reg32) u32::from(second),
            c = in(reg32) u32::from(c),
            p = in(reg64) p,
            a = inout(reg32) *a,
            b = inout(reg32) *b,
            options(pure, readonly, nostack)
        )
    };
}

//! What a kernel's per-thread logic may ask of the machine it runs on.
//!
//! Kernel bodies in this crate are generic over [`Thread`]. The PTX entry
//! points implement it with real intrinsics; `df11-host`'s emulator implements
//! it with one OS thread per GPU thread, a real barrier and real shared memory,
//! so tests run the *same* functions the GPU runs.

use crate::format::LANE_RUN;

/// One GPU thread's view of its launch: indices, the block barrier and the
/// block's shared memory (a `u32` array, as large as the launch asked for).
pub trait Thread {
    /// `threadIdx.x`.
    fn thread_idx(&self) -> u32;
    /// `blockIdx.x`.
    fn block_idx(&self) -> u32;
    /// `blockDim.x`.
    fn block_dim(&self) -> u32;
    /// `gridDim.x`.
    fn grid_dim(&self) -> u32;
    /// `__syncthreads()`: every thread of the block must call it, the same
    /// number of times.
    fn sync_threads(&self);
    /// Number of `u32` words of dynamic shared memory.
    fn shared_len(&self) -> usize;
    /// Reads shared word `i`. Panics (traps on the GPU) if out of range.
    fn shared_load(&self, i: usize) -> u32;
    /// Writes shared word `i`. Panics (traps on the GPU) if out of range.
    fn shared_store(&self, i: usize, v: u32);
    /// Reads the `u16` at half-word index `i` of shared memory (the low half of
    /// word `i / 2` when `i` is even: little-endian, as on the GPU). Panics
    /// (traps on the GPU) if out of range.
    fn shared_load_u16(&self, i: usize) -> u16;
    /// Reads shared words `2i` and `2i + 1` (one 8-byte load on the GPU).
    /// Panics (traps on the GPU) if out of range.
    fn shared_load_pair(&self, i: usize) -> [u32; 2] {
        [self.shared_load(2 * i), self.shared_load(2 * i + 1)]
    }

    /// This thread's lane within its warp, `0..32`.
    fn lane_id(&self) -> u32;
    /// `__ballot_sync(0xffffffff, pred)`: bit `j` is lane `j`'s `pred`.
    ///
    /// Warp operations must be reached by all 32 lanes of the warp together,
    /// the same number of times in the same order (as `*.sync` with a full
    /// mask requires on the GPU); kernels using them need `block_dim % 32 == 0`.
    fn ballot(&self, pred: bool) -> u32;
    /// `__shfl_sync(0xffffffff, v, src_lane)`: lane `src_lane`'s `v` (only the
    /// low 5 bits of `src_lane` count). Same convergence rule as [`Thread::ballot`].
    fn shfl(&self, v: u32, src_lane: u32) -> u32;
}

/// Global memory written by many threads: each index written by at most one
/// thread per launch. Out-of-range writes panic (trap on the GPU).
pub trait GlobalOut<T: Copy> {
    /// Element count.
    fn len(&self) -> usize;
    /// `true` when [`GlobalOut::len`] is zero.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Stores `v` at `i`.
    fn store(&self, i: usize, v: T);
}

/// A bf16 output that also takes whole runs of [`LANE_RUN`] elements (one
/// 16-byte store each on the GPU), bounds-checked once for a stretch of runs
/// instead of once per run.
pub trait GlobalRuns: GlobalOut<u16> {
    /// A checked stretch of runs.
    type Runs<'a>: Runs
    where
        Self: 'a;
    /// The `count` runs from element `start`: `None` unless `start` is a
    /// multiple of [`LANE_RUN`], every run lies in the buffer and (on the GPU)
    /// the first one is 16-byte aligned.
    fn runs(&self, start: usize, count: u32) -> Option<Self::Runs<'_>>;
    /// Stores `v` at `i` when `c` holds, like [`GlobalOut::store`], except
    /// that on the GPU it is one predicated store and an out-of-range `i` is
    /// dropped instead of trapping: a branch (to a trap or around a store)
    /// that depends on the lane makes ptxas guard every warp vote and
    /// shuffle of the loops around it.
    fn store_if(&self, i: usize, v: u16, c: bool) {
        if c {
            self.store(i, v);
        }
    }
}

/// Runs handed out by [`GlobalRuns::runs`].
pub trait Runs {
    /// Stores run `k` of the stretch as four words of two bf16 values each,
    /// the first in the low half. Panics unless `k` is below the stretch's
    /// count; on the GPU such a store is dropped instead (a trap would be a
    /// lane-dependent exit, see [`GlobalRuns::store_if`]).
    fn store(&self, k: u32, v: [u32; LANE_RUN / 2]);
}

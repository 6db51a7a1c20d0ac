//! What a kernel's per-thread logic may ask of the machine it runs on.
//!
//! Kernel bodies in this crate are generic over [`Thread`]. The PTX entry
//! points implement it with real intrinsics; `df11-host`'s emulator implements
//! it with one OS thread per GPU thread, a real barrier and real shared memory,
//! so tests run the *same* functions the GPU runs.

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

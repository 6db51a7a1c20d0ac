//! A minimal kernel that proves the Rust→PTX path end to end: thread and block
//! indices, dynamic shared memory and a barrier. Each block reverses its tile
//! of `u32`s by staging it in shared memory.

use crate::thread::{GlobalOut, Thread};

/// Entry-point name of [`reverse_tiles`] in the PTX module.
pub const KERNEL_NAME: &str = "df11_demo_reverse_tiles";

/// Reverses every `block_dim`-sized tile of `input` into `output`; the last
/// tile may be short. Needs `block_dim` words of shared memory.
pub fn reverse_tiles<T: Thread, O: GlobalOut<u32>>(t: &T, input: &[u32], output: &O) {
    let dim = t.block_dim() as usize;
    let tid = t.thread_idx() as usize;
    let mut tile = t.block_idx() as usize;
    // Grid-stride over tiles, so any grid size covers any input.
    while tile * dim < input.len() {
        let base = tile * dim;
        let n = dim.min(input.len() - base);
        if tid < n {
            t.shared_store(tid, input[base + tid]);
        }
        t.sync_threads();
        if tid < n {
            output.store(base + tid, t.shared_load(n - 1 - tid));
        }
        // The next tile overwrites shared memory: wait until all have read it.
        t.sync_threads();
        tile += t.grid_dim() as usize;
    }
}

//! The checkpoint reader (`df11::checkpoint`) on an arbitrary single file:
//! the strict safetensors parser, df11's `__metadata__`, listing, and
//! decoding every unit, every tensor and every block group with the CPU
//! decoder. Errors are fine; panics, aborts and huge allocations are not.
#![no_main]

use df11::checkpoint::{Checkpoint, CpuDecoder};
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    // The reader maps files: give it one. One file per process, rewritten
    // for every input.
    thread_local! {
        static PATH: std::path::PathBuf =
            std::env::temp_dir().join(format!("df11-fuzz-checkpoint-{}.safetensors", std::process::id()));
    }
    let path = PATH.with(Clone::clone);
    {
        let mut f = std::fs::File::create(&path).expect("create the input file");
        f.write_all(data).expect("write the input file");
    }
    let Ok(ckpt) = Checkpoint::open(&path) else { return };
    for (shard, unit) in ckpt.units() {
        let _ = unit.stored_bytes();
        let _ = unit.plain_bytes();
        let _ = shard.decode_unit(unit, &CpuDecoder);
    }
    for t in ckpt.tensors() {
        let _ = ckpt.decode(&t.name);
    }
    for g in ckpt.block_groups().iter() {
        let _ = ckpt.decode_group(g);
    }
});

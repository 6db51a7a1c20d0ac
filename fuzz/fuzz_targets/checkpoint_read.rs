//! The CLI's checkpoint reader on an arbitrary single file: the safetensors
//! header parser, df11's `__metadata__`, and decoding every item with the CPU
//! decoder. Errors are fine; panics, aborts and huge allocations are not.
//!
//! The reader lives in the `df11` binary, not the library, so its modules are
//! compiled into this target from their sources, at the crate paths they
//! use (`crate::error`, `crate::codec`, `crate::checkpoint`).
#![no_main]

#[allow(dead_code)]
#[path = "../../src/checkpoint/mod.rs"]
mod checkpoint;
#[allow(dead_code)]
#[path = "../../src/codec.rs"]
mod codec;
#[allow(dead_code, unused_imports)]
#[path = "../../src/error.rs"]
mod error;
#[allow(dead_code)]
#[path = "../../src/cli/load.rs"]
mod load;

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
    let Ok(loaded) = load::Loaded::open(&path, None, &|_| {}) else { return };
    for (file, item) in loaded.items() {
        let _ = item.stored_bytes();
        let _ = item.plain_bytes();
        let _ = load::materialize(file, item, &codec::CpuDecoder);
    }
});

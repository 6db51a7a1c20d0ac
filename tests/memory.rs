//! Memory stays bounded by the batch budget, not the checkpoint: compressing
//! and decompressing a checkpoint many times larger than the budget keeps
//! the peak of live heap memory, counted by this test's allocator, at a few
//! tensors.

use df11::checkpoint::{Checkpoint, OwnedTensor, WriteOptions, write_file};
use df11::synth::realistic_weights;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// One test at a time measures (the harness runs tests in threads).
static SERIAL: Mutex<()> = Mutex::new(());

/// Peak live heap bytes above the level at the start, while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

const TENSORS: usize = 24;
const ELEMS: usize = 1 << 19; // 1 MiB of bf16 each: 24 MiB in all
const BUDGET: u64 = 2 << 20; // two tensors a batch

#[test]
fn peak_memory_is_a_few_tensors_not_the_checkpoint() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain.safetensors");
    {
        let tensors: Vec<OwnedTensor> = (0..TENSORS)
            .map(|i| {
                let bits = realistic_weights(512, ELEMS / 512, 0.02, i as u64);
                let bytes = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
                OwnedTensor::new(format!("model.layers.{i}.mlp.up_proj.weight"), "BF16", vec![512, 1024], bytes)
            })
            .collect();
        write_file(&plain, &tensors, None, None).unwrap();
    }
    let total = (TENSORS * ELEMS * 2) as u64;
    let tensor = (ELEMS * 2) as u64;
    let src = Checkpoint::open(&plain).unwrap();
    let comp = tmp.path().join("df11.safetensors");
    let opts = WriteOptions { encode: Some(Default::default()), batch_bytes: BUDGET, ..Default::default() };
    let compress = peak_during(|| {
        src.write_to(&comp, &opts).unwrap();
    }) as u64;
    let df11 = Checkpoint::open(&comp).unwrap();
    let back = tmp.path().join("back.safetensors");
    let opts = WriteOptions { batch_bytes: BUDGET, ..Default::default() };
    let decompress = peak_during(|| {
        df11.write_to(&back, &opts).unwrap();
    }) as u64;
    eprintln!("checkpoint {total} bytes; peak heap: compress {compress}, decompress {decompress}");
    // Two batches of two tensors in flight, each with its coded copy and the
    // codec's working buffers: about ten tensors at most, a third of the input.
    for (what, peak) in [("compress", compress), ("decompress", decompress)] {
        assert!(peak <= 10 * tensor, "{what}: peak heap {peak} bytes for a {total}-byte checkpoint");
    }
    // The round trip is exact.
    let (a, b) = (Checkpoint::open(&plain).unwrap(), Checkpoint::open(&back).unwrap());
    for t in a.tensors() {
        assert_eq!(a.decode(&t.name).unwrap(), b.decode(&t.name).unwrap(), "{}", t.name);
    }
}

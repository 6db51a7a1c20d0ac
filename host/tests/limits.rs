//! Resource limits: headers that claim huge sizes in a short input are
//! rejected before anything of that size is allocated.
//!
//! This binary installs a global allocator that records the largest single
//! allocation, so "before allocating" is checked, not assumed. It holds one
//! test only, so no other test's allocations run concurrently with it.

use df11_gpu::format::{MAGIC, VERSION};
use df11_host::gpu::GroupLayout;
use df11_host::{CompressedTensor, Error, Group, decode_reference};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, recording the largest request since the last reset.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Any allocation above this during a rejection is a failure: the inputs are
/// a few hundred bytes, the claims terabytes.
const LIMIT: usize = 1 << 20;

/// Runs `f`, which must fail, and checks it neither allocated more than
/// [`LIMIT`] at once nor took long.
fn rejected_cheaply<T: std::fmt::Debug>(what: &str, f: impl FnOnce() -> Result<T, Error>) -> Error {
    LARGEST.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let r = f();
    let elapsed = start.elapsed();
    let largest = LARGEST.load(Ordering::Relaxed);
    let err = r.expect_err(what);
    assert!(largest <= LIMIT, "{what}: allocated {largest} bytes at once before failing with {err}");
    assert!(elapsed < Duration::from_secs(1), "{what}: took {elapsed:?}");
    err
}

fn container_header(count: u32) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// A record header with the given sizes, a complete 1-bit code, and a few
/// bytes of "payload"; the record CRC is over what is there.
fn record_header(n: u64, rows: u32, segments: u32, words: u32) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&n.to_le_bytes());
    r.extend_from_slice(&rows.to_le_bytes());
    r.extend_from_slice(&segments.to_le_bytes());
    r.extend_from_slice(&words.to_le_bytes());
    r.extend_from_slice(&[1, 0, 0, 0]); // max_len 1, only_symbol, reserved
    r.extend_from_slice(&[0; 8]); // data_crc, reserved
    let mut lengths = [0u8; 128];
    lengths[63] = 0x11; // exponents 126 and 127: one bit each
    r.extend_from_slice(&lengths);
    r.extend_from_slice(&[0; 64]);
    let crc = crc32c::crc32c(&r);
    r.extend_from_slice(&crc.to_le_bytes());
    r
}

#[test]
fn huge_claims_are_rejected_without_allocating_them() {
    // 2^39 elements at one row per segment: 2^31 segments (a valid count),
    // 2^32 - 1 words. The record would be about 575 GB.
    let n = 1u64 << 39;
    let mut huge = container_header(1);
    huge.extend(record_header(n, 1, (n / 256) as u32, u32::MAX));
    let e = rejected_cheaply("2^39 elements", || CompressedTensor::from_bytes(&huge));
    assert!(matches!(e, Error::Truncated { needed, .. } if needed > 1 << 39), "{e}");
    rejected_cheaply("2^39 elements, group", || Group::from_bytes(&huge));

    // The largest legal element count with the largest segments.
    let n = (1u64 << 40) - 1;
    let mut b = container_header(1);
    b.extend(record_header(n, 1 << 16, n.div_ceil(1 << 24) as u32, u32::MAX));
    rejected_cheaply("2^40 - 1 elements", || CompressedTensor::from_bytes(&b));

    // Sizes beyond the format's limits are rejected for what they are.
    let mut b = container_header(1);
    b.extend(record_header(1 << 40, 1, 0, 0));
    let e = rejected_cheaply("2^40 elements", || CompressedTensor::from_bytes(&b));
    assert!(matches!(e, Error::Invalid { field: "num_elements", .. }), "{e}");
    let mut b = container_header(1);
    b.extend(record_header(1000, 0, 4, 0));
    let e = rejected_cheaply("0 segment rows", || CompressedTensor::from_bytes(&b));
    assert!(matches!(e, Error::Invalid { field: "segment_rows", .. }), "{e}");
    // A segment count that disagrees with N is not trusted for a length.
    let mut b = container_header(1);
    b.extend(record_header(10, 1, u32::MAX, 0));
    let e = rejected_cheaply("2^32 - 1 segments", || CompressedTensor::from_bytes(&b));
    assert!(matches!(e, Error::Invalid { field: "num_segments", .. }), "{e}");

    // 2^32 - 1 tensors announced, none present: no capacity reserved for them.
    let many = container_header(u32::MAX);
    rejected_cheaply("2^32 - 1 tensors", || Group::from_bytes(&many));
    let mut many = container_header(u32::MAX);
    many.extend(record_header(0, 1, 0, 0));
    rejected_cheaply("2^32 - 1 tensors, one present", || Group::from_bytes(&many));

    // In-memory tensors (their fields are public) that claim sizes their
    // buffers do not back: decoders and the GPU layout validate first.
    let liar = CompressedTensor {
        num_elements: 1 << 39,
        segment_rows: 1,
        max_len: 0,
        only_symbol: 127,
        code_lengths: [0; 512],
        data_crc: 0,
        layout: df11_host::Layout::Warp,
        stream_offsets: vec![0; 2],
        words: vec![],
        sign_mantissa: vec![0; 16],
    };
    rejected_cheaply("reference decode of 2^39 claimed elements", || decode_reference(&liar));
    let group = Group { tensors: vec![liar] };
    rejected_cheaply("GPU layout of 2^39 claimed elements", || GroupLayout::new(&group));
}

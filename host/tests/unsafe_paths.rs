//! Every `unsafe` loop of the CPU codec on inputs small enough for Miri:
//! the encoders' first pass and lane coders, the lanes decoders' round loop
//! and joins (with and without the CRC, storing and comparing), the warp
//! decoder, on one thread and in parallel, on whole and damaged tensors.
//!
//! Under `cargo test` these are quick round trips. Under Miri (TESTING.md
//! section 6, with the SIMD features enabled so that the detected paths
//! run) they check that no input reaches undefined behaviour: out-of-bounds
//! or unaligned accesses, reads of uninitialised bytes, data races.

mod common;

use df11_host::decode::{compare_container, decode_container_into, decode_into, decode_range_into};
use df11_host::encode::compress_exact;
use df11_host::format::ROW_ELEMS;
use df11_host::synth::{SplitMix64, realistic_weights};
use df11_host::{CompressedTensor, DecodeOptions, EncodeOptions, Layout};

const LAYOUTS: [Layout; 3] = [Layout::Lanes, Layout::Lanes9, Layout::Warp];

/// Enough rows (segments of 2 and 8 rows) for the round loop to run whole
/// rounds, with a partial last row.
const ROWS9: usize = 9 * ROW_ELEMS + 77;

/// Sizes: empty, one element, a partial row, and [`ROWS9`]. Miri, far
/// slower than the compiled code, takes the last one only, from its random bits only (every path but the empty ones), and
/// fewer segment sizes and options.
const SIZES: &[usize] = if cfg!(miri) { &[ROWS9] } else { &[0, 1, 300, ROWS9] };
const ROWS: &[u32] = if cfg!(miri) { &[8] } else { &[2, 8] };

fn random(n: usize, seed: u64) -> Vec<u16> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_u64() as u16).collect()
}

fn inputs(n: usize) -> Vec<Vec<u16>> {
    let random = random(n, n as u64 + 5);
    if cfg!(miri) { vec![random] } else { vec![realistic_weights(1, n, 0.02, n as u64), random] }
}

fn enc(bits: &[u16], rows: u32, layout: Layout) -> CompressedTensor {
    compress_exact(bits, &EncodeOptions { segment_rows: rows, layout })
}

const ALL_OPTS: [DecodeOptions; 3] = [
    DecodeOptions { verify_crc: true, parallel: false },
    DecodeOptions { verify_crc: true, parallel: true },
    DecodeOptions { verify_crc: false, parallel: false },
];
const OPTS: &[DecodeOptions] = if cfg!(miri) { ALL_OPTS.split_at(2).0 } else { &ALL_OPTS };

#[test]
fn round_trips_every_path() {
    for &n in SIZES {
        for bits in inputs(n) {
            for layout in LAYOUTS {
                for &rows in ROWS {
                    let t = enc(&bits, rows, layout);
                    let bytes = t.to_bytes();
                    for &opts in OPTS {
                        let mut out = vec![0xdead; n];
                        decode_into(&t, &mut out, &opts).unwrap();
                        assert!(out == bits, "{layout:?} R={rows} n={n} {opts:?}");
                        out.fill(0xdead);
                        decode_container_into(&bytes, &mut out, &opts).unwrap();
                        assert!(out == bits, "in place, {layout:?} R={rows} n={n}");
                        assert_eq!(compare_container(&bytes, &bits, &opts), Ok(None));
                    }
                    if n > 0 {
                        // A changed last element: compared in the partial row.
                        let mut want = bits.clone();
                        want[n - 1] ^= 0x10;
                        let got = compare_container(&bytes, &want, &ALL_OPTS[0]).unwrap();
                        assert_eq!(got.map(|d| d.0), Some(n as u64 - 1), "{layout:?} R={rows} n={n}");
                        // A range starting in the second segment.
                        let start = (rows as usize * ROW_ELEMS).min(n - 1);
                        let mut part = vec![0; n - start];
                        decode_range_into(&t, start as u64, &mut part, &ALL_OPTS[0]).unwrap();
                        assert!(part == bits[start..], "range, {layout:?} R={rows} n={n}");
                    }
                }
            }
        }
    }
}

/// Damaged streams, offsets and raw bytes: whatever the fast decoders
/// return, they return it without undefined behaviour, and judge each
/// tensor as the reference decoder does (`common::judge_alike`).
#[test]
fn damaged_tensors_stay_in_bounds() {
    let n = ROWS9;
    let bits = if cfg!(miri) { random(n, 3) } else { realistic_weights(1, n, 0.02, 3) };
    let mut rng = SplitMix64::new(17);
    for layout in LAYOUTS {
        let t = enc(&bits, 2, layout);
        for kind in 0..4 {
            let mut bad = t.clone();
            let r = rng.next_u64();
            common::damage(&mut bad, r as usize, (r >> 32) as u32, kind);
            common::judge_alike(&bad);
            // In place: the record CRC is checked as it goes.
            let bytes = bad.to_bytes();
            let mut out = vec![0; n];
            let _ = decode_container_into(&bytes, &mut out, &ALL_OPTS[0]);
            let _ = compare_container(&bytes, &bits, &ALL_OPTS[0]);
        }
    }
}

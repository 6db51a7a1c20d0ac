//! `decode::decode_range_into`: any element range of a tensor, in either
//! layout, decodes to exactly those elements of the reference decoder's
//! output, on one thread and in parallel; ranges outside the tensor and
//! corrupt streams are errors, never panics.

mod common;

use common::shuffled;
use df11_host::decode::{DecodeOptions, decode_range_into};
use df11_host::synth::{self, SplitMix64};
use df11_host::{EncodeOptions, Error, Layout, compress_with, decode_reference};
use proptest::prelude::*;

const LAYOUTS: [Layout; 2] = [Layout::Warp, Layout::Lanes];

/// Every range `[a, b)` of `bits` decoded both ways must equal `bits[a..b]`.
fn check_ranges(bits: &[u16], rows: u32, layout: Layout, ranges: &[(usize, usize)]) {
    let t = compress_with(bits, &EncodeOptions { segment_rows: rows, layout });
    let whole = decode_reference(&t).expect("reference decodes");
    assert_eq!(whole, bits);
    for &(a, b) in ranges {
        for parallel in [false, true] {
            // Poisoned, so that an element left unwritten is caught.
            let mut out = vec![0xdead; b - a];
            let opts = DecodeOptions { verify_crc: true, parallel };
            decode_range_into(&t, a as u64, &mut out, &opts).expect("range decodes");
            assert!(out == bits[a..b], "{layout:?} R = {rows}, range {a}..{b}, parallel {parallel}");
        }
    }
}

#[test]
fn all_patterns_in_pieces() {
    let bits = shuffled((0..=u16::MAX).collect(), 7);
    let seg = 256 * 3;
    // Segment boundaries, cuts inside segments, single elements, the ends.
    let ranges = [(0, 0), (0, 1), (0, seg), (seg - 1, seg + 1), (5, 3 * seg + 17), (65_535, 65_536), (0, 65_536)];
    for layout in LAYOUTS {
        check_ranges(&bits, 3, layout, &ranges);
    }
}

#[test]
fn rows_of_a_matrix() {
    // An embedding-shaped matrix read row by row, rows not aligned to segments.
    let (rows, cols) = (300, 1000);
    let bits = synth::realistic_weights(rows, cols, 0.02, 11);
    let ranges: Vec<_> = (0..rows).step_by(37).map(|r| (r * cols, (r + 1) * cols)).collect();
    for layout in LAYOUTS {
        check_ranges(&bits, 4, layout, &ranges);
    }
}

#[test]
fn out_of_range_is_an_error() {
    let bits = synth::realistic_weights(10, 100, 0.02, 3);
    for layout in LAYOUTS {
        let t = compress_with(&bits, &EncodeOptions { segment_rows: 1, layout });
        let opts = DecodeOptions::default();
        let mut out = vec![0; 10];
        assert!(matches!(decode_range_into(&t, 995, &mut out, &opts), Err(Error::OutputLength { .. })));
        assert!(matches!(decode_range_into(&t, u64::MAX, &mut out, &opts), Err(Error::OutputLength { .. })));
        assert_eq!(decode_range_into(&t, 1000, &mut [], &opts), Ok(()));
    }
}

#[test]
fn corrupt_stream_is_reported() {
    let bits = synth::realistic_weights(64, 256, 0.02, 5);
    for layout in LAYOUTS {
        let mut t = compress_with(&bits, &EncodeOptions { segment_rows: 2, layout });
        let mut rng = SplitMix64::new(9);
        for w in t.words.iter_mut() {
            *w = rng.next_u64() as u32;
        }
        let mut out = vec![0; 600];
        // Random words: the segment's codes no longer end where its offsets
        // say (or, by chance, they do and the bits differ; either way no panic).
        let r = decode_range_into(&t, 100, &mut out, &DecodeOptions::default());
        assert!(r.is_err() || out != bits[100..700], "{layout:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_range(bits in proptest::collection::vec(any::<u16>(), 1..4000), rows in 1u32..4,
                 a in any::<proptest::sample::Index>(), b in any::<proptest::sample::Index>(), lanes in any::<bool>()) {
        let (a, b) = (a.index(bits.len() + 1), b.index(bits.len() + 1));
        let layout = if lanes { Layout::Lanes } else { Layout::Warp };
        check_ranges(&bits, rows, layout, &[(a.min(b), a.max(b))]);
    }
}

#[test]
fn segments_are_tensors_of_their_own() {
    let bits = shuffled((0..=u16::MAX).chain(0..1000).collect(), 3);
    for layout in LAYOUTS {
        let t = compress_with(&bits, &EncodeOptions { segment_rows: 5, layout });
        let (seg, s) = (256 * 5, t.num_segments() as usize);
        for (first, count) in [(0, 1), (0, s), (3, 7), (s - 1, 1), (s - 4, 4)] {
            let p = t.segments(first as u64, count as u64).expect("a range of segments");
            p.validate().expect("valid");
            let want = &bits[first * seg..((first + count) * seg).min(bits.len())];
            // The CPU decoders check the new data CRC; the bytes round-trip.
            assert_eq!(df11_host::decode::decode(&p, &DecodeOptions::default()).as_deref(), Ok(want));
            assert_eq!(decode_reference(&p).as_deref(), Ok(want), "{layout:?} {first}+{count}");
            assert_eq!(df11_host::CompressedTensor::from_bytes(&p.to_bytes()).as_ref(), Ok(&p));
        }
        for (first, count) in [(0, 0), (s, 1), (1, s), (u64::MAX as usize, 2)] {
            assert!(t.segments(first as u64, count as u64).is_err(), "{first}+{count}");
        }
    }
}

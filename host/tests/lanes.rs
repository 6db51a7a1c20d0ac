//! The lanes layout (FORMAT.md section 8): the encoder, the reference decoder
//! and the fast decoder agree bit for bit on every kind of input; the
//! container round-trips as version 2; corrupt lane streams are rejected by
//! both decoders alike, never with a panic.

mod common;

use common::{decode_both, judge_alike, shuffled};
use df11_host::decode::{self, DecodeOptions};
use df11_host::format::{LANE_RUN, LANES, ROW_ELEMS};
use df11_host::synth::{self, SplitMix64};
use df11_host::{CompressedTensor, EncodeOptions, Error, Layout, compress_with, decode_reference};
use proptest::prelude::*;

fn enc(bits: &[u16], rows: u32) -> CompressedTensor {
    compress_with(bits, &EncodeOptions { segment_rows: rows, layout: Layout::Lanes })
}

/// Compresses, checks the reference and both fast decoders bit-exact, and the
/// serialized form round-trips as a version-2 container.
fn check(bits: &[u16], rows: u32) -> CompressedTensor {
    let t = enc(bits, rows);
    assert_eq!(t.layout, Layout::Lanes);
    assert_eq!(decode_reference(&t).as_deref(), Ok(bits), "reference, {} elements, R = {rows}", bits.len());
    for r in decode_both(&t, &DecodeOptions::default()) {
        assert_eq!(r.as_deref(), Ok(bits), "fast, {} elements, R = {rows}", bits.len());
    }
    let bytes = t.to_bytes();
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 2, "lanes containers are version 2");
    assert_eq!(CompressedTensor::from_bytes(&bytes).as_ref(), Ok(&t));
    t
}

#[test]
fn all_65536_patterns() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    for rows in [1, 3, 256] {
        check(&bits, rows);
    }
}

/// Tensors of 64 Ki elements and more, with 8 or more per pair of exponents
/// they hold, are coded two exponents a lookup: here all 256 exponents (each
/// pattern 8 times, scrambled), so every pair entry, 12-bit codes included,
/// is used.
#[test]
fn pair_table_all_patterns() {
    let bits = shuffled((0..8 << 16).map(|i| i as u16).collect(), 7);
    for rows in [1, 1024] {
        check(&bits, rows);
    }
}

#[test]
fn lengths_zero_one_odd() {
    for n in [0, 1, 2, 7, 8, 9, 255, 256, 257, 8191, 70_001] {
        check(&vec![0x3c00u16; n], 2);
        check(&(0..n).map(|i| (i * 40_503) as u16).collect::<Vec<_>>(), 1);
        check(&synth::realistic_weights(1, n, 0.02, n as u64), 3);
    }
}

/// Segments longer than the decoder's 512-row chunks, so lanes carry their
/// state and their extra exponents from chunk to chunk, with partial last
/// rows and segments of every shape.
#[test]
fn segments_spanning_decode_chunks() {
    let bits = synth::realistic_weights(1, 3 * 1024 * ROW_ELEMS + 1000, 0.02, 11);
    for rows in [511, 512, 513, 1024, 1500, 4096] {
        for n in [bits.len(), 512 * ROW_ELEMS, 512 * ROW_ELEMS + 3, 1025 * ROW_ELEMS - 9] {
            check(&bits[..n], rows);
        }
    }
}

/// The same with codes of one and two bits, so that most lookups take five
/// exponents and lanes overshoot a chunk's end by up to four.
#[test]
fn short_codes_spanning_decode_chunks() {
    let mut rng = SplitMix64::new(5);
    let bits: Vec<u16> = (0..1025 * ROW_ELEMS + 77)
        .map(|_| {
            let r = rng.next_u64();
            let e = [126, 126, 127, 125][(r & 3) as usize];
            e << 7 | (r >> 16) as u16 & 0x807f
        })
        .collect();
    for rows in [512, 513, 1500] {
        for n in [bits.len(), 512 * ROW_ELEMS, 512 * ROW_ELEMS + 3] {
            check(&bits[..n], rows);
        }
    }
}

/// Outputs of 8 MiB and more are written with non-temporal stores: bit-exact
/// too, into aligned and unaligned buffers, with and without the CRC check.
#[test]
fn large_output_streamed_past_the_caches() {
    let bits = synth::realistic_weights(1, (4 << 20) + 777, 0.02, 9);
    let t = enc(&bits, 1024);
    let opts = DecodeOptions { verify_crc: false, ..Default::default() };
    for r in decode_both(&t, &opts) {
        assert!(r.as_deref() == Ok(&bits[..]), "aligned output");
    }
    // One element in: the output starts 2 bytes past a 16-byte boundary.
    let mut buf = vec![0u16; bits.len() + 1];
    let out = &mut buf[1..];
    decode::decode_into(&t, out, &DecodeOptions { parallel: false, ..opts }).unwrap();
    assert!(out == &bits[..], "unaligned output");
    // With the CRC checked too (computed from the joined values before they
    // are stored): right, and a wrong stored CRC is caught.
    let verify = DecodeOptions::default();
    for r in decode_both(&t, &verify) {
        assert!(r.as_deref() == Ok(&bits[..]), "checked output");
    }
    decode::decode_into(&t, out, &DecodeOptions { parallel: false, ..verify }).unwrap();
    assert!(out == &bits[..], "checked unaligned output");
    let mut wrong = t.clone();
    wrong.data_crc ^= 1;
    for r in decode_both(&wrong, &verify) {
        assert!(matches!(r, Err(df11_host::Error::Checksum { .. })), "wrong data CRC");
    }
}

/// Long runs of the longest codes: a lookup yields one exponent, and a
/// round's four lookups take up to 48 of the 56 bits a refill provides.
#[test]
fn worst_case_long_codes() {
    // Realistic weights have 12-bit codes for their rarest exponents; a block
    // of 16 rows made of those alone keeps them rare enough to stay long.
    let mut bits = synth::realistic_weights(1, 1_200_000, 0.02, 5);
    let base = enc(&bits, 1024);
    let longest: Vec<u16> = (0..256).filter(|&e| base.code_lengths[e] == base.max_len).map(|e| e as u16).collect();
    assert_eq!(base.max_len, 12);
    for (i, b) in bits[600_000..600_000 + 16 * ROW_ELEMS].iter_mut().enumerate() {
        *b = (*b & 0x807f) | longest[i % longest.len()] << 7;
    }
    let t = check(&bits, 1024);
    assert!(longest.iter().all(|&e| t.code_lengths[e as usize] >= 11), "{:?}", t.code_lengths);
}

/// The stream layout itself, on a tensor small enough to check by hand: each
/// lane's stream is its codes in slot order, MSB-first, as bytes, padded to
/// whole words; offsets are per lane.
#[test]
fn lane_streams_worked_example() {
    // Two exponents: 126 with code 0, 127 with code 1 (both one bit). Lane j
    // of row 0 has elements 8j..8j + 8; exponent 127 where (i / 3) is odd.
    let bits: Vec<u16> = (0..300).map(|i| if (i / 3) % 2 == 1 { 127 << 7 } else { 126 << 7 }).collect();
    let t = enc(&bits, 1);
    assert_eq!(t.code_lengths[126], 1);
    assert_eq!(t.code_lengths[127], 1);
    assert_eq!(t.stream_offsets.len(), 2 * LANES + 1);
    let bytes: Vec<u8> = t.words.iter().flat_map(|w| w.to_le_bytes()).collect();
    for s in 0..2 {
        for j in 0..LANES {
            let at = t.stream_offsets[LANES * s + j] as usize * 4;
            let end = t.stream_offsets[LANES * s + j + 1] as usize * 4;
            let elems: Vec<usize> =
                (0..LANE_RUN).map(|k| ROW_ELEMS * s + LANE_RUN * j + k).filter(|&i| i < bits.len()).collect();
            let mut expect = vec![0u8; elems.len().div_ceil(32) * 4];
            for (b, &i) in elems.iter().enumerate() {
                expect[b / 8] |= (((i / 3) % 2) as u8) << (7 - b % 8);
            }
            assert_eq!(&bytes[at..end], &expect[..], "segment {s} lane {j}");
        }
    }
}

#[test]
fn version_1_cannot_hold_the_lanes_layout() {
    let t = enc(&synth::realistic_weights(3, 300, 0.02, 1), 1);
    let mut bytes = t.to_bytes();
    bytes[4..6].copy_from_slice(&1u16.to_le_bytes());
    df11_host::container::reseal_crcs(&mut bytes);
    let e = CompressedTensor::from_bytes(&bytes).unwrap_err();
    assert!(matches!(e, Error::Invalid { field: "reserved", .. }), "{e}");
    // An unknown layout is named as such.
    let mut bytes = t.to_bytes();
    bytes[16 + 22] = 2;
    df11_host::container::reseal_crcs(&mut bytes);
    let e = CompressedTensor::from_bytes(&bytes).unwrap_err();
    assert!(matches!(e, Error::Invalid { field: "layout", .. }), "{e}");
}

/// Groups may mix layouts; a warp-only container stays version 1.
#[test]
fn groups_mix_layouts() {
    let a = synth::realistic_weights(5, 300, 0.02, 2);
    let warp = compress_with(&a, &EncodeOptions { segment_rows: 2, layout: Layout::Warp });
    let lanes = enc(&a, 2);
    let only_warp = df11_host::Group { tensors: vec![warp.clone()] }.to_bytes();
    assert_eq!(u16::from_le_bytes([only_warp[4], only_warp[5]]), 1);
    let g = df11_host::Group { tensors: vec![warp, lanes] };
    let bytes = g.to_bytes();
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 2);
    assert_eq!(df11_host::Group::from_bytes(&bytes).as_ref(), Ok(&g));
}

#[test]
fn lane_longer_than_its_codes_can_be_is_invalid() {
    let bits: Vec<u16> = (0..5000).map(|i| 0x3f00 | (i % 2) << 7).collect();
    let mut t = enc(&bits, 1);
    // One code of one bit per element: a full lane needs 8 bits, one word.
    t.words.insert(0, 0);
    for o in &mut t.stream_offsets[1..] {
        *o += 1;
    }
    let e = t.validate().unwrap_err();
    assert!(matches!(e, Error::Invalid { field: "stream_offsets", .. }), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_patterns(bits in proptest::collection::vec(any::<u16>(), 0..3000), rows in 1u32..5) {
        check(&bits, rows);
    }

    #[test]
    fn realistic_any_length(seed in any::<u64>(), n in 0usize..70_000, rows in prop::sample::select(vec![1u32, 2, 5, 16, 64, 1024])) {
        check(&synth::realistic_weights(1, n, 0.02, seed), rows);
    }

    /// Around the size from which the encoder uses its pair table.
    #[test]
    fn realistic_around_the_pair_table(seed in any::<u64>(), n in 60_000usize..140_000, rows in prop::sample::select(vec![1u32, 3, 256])) {
        check(&synth::realistic_weights(1, n, 0.02, seed), rows);
    }

    #[test]
    fn few_exponents(seed in any::<u64>(), n in 0usize..5000, k in 1u16..6, rows in 1u32..4) {
        let mut rng = SplitMix64::new(seed);
        let bits: Vec<u16> = (0..n).map(|_| (120 + (rng.next_u64() % k as u64) as u16) << 7 | (rng.next_u64() as u16 & 0x807f)).collect();
        check(&bits, rows);
    }

    /// Segments of long codes alternate with segments whose lanes end in a
    /// store of nearly 64 bits: a lane's last word can then reach past that
    /// store, into bytes the long segment left in the encoder's scratch (a
    /// bug once; they must be the stream's zero padding).
    #[test]
    fn stream_ends_after_long_segments(seed in any::<u64>(), segments in 1usize..40, rows in 2u32..4, common_pct in 0u64..40) {
        let mut rng = SplitMix64::new(seed);
        let seg = 256 * rows as usize;
        let bits: Vec<u16> = (0..segments * seg)
            .map(|i| {
                let r = rng.next_u64();
                let rare = 64 + (r % 64) as u16;
                let e = if (i / seg) % 2 == 1 && (r >> 32) % 100 < common_pct { 126 } else { rare };
                e << 7 | (r >> 16) as u16 & 0x807f
            })
            .collect();
        check(&bits, rows);
    }

    #[test]
    fn damaged_streams_are_judged_alike(
        seed in any::<u64>(),
        n in 1usize..20_000,
        rows in 1u32..4,
        damage in proptest::collection::vec((any::<usize>(), any::<u32>(), 0u8..4), 1..4),
    ) {
        let mut t = enc(&synth::realistic_weights(1, n, 0.02, seed), rows);
        for (pos, val, kind) in damage {
            common::damage(&mut t, pos, val, kind);
        }
        judge_alike(&t);
    }
}

/// The encoder's output does not depend on the thread count: one thread takes
/// a sequential path, several split the first pass (histogram, CRC, sign and
/// mantissa bytes) and the segments between them. Lengths around the first
/// pass's block (4096) and task (65,536) sizes.
#[test]
fn same_output_whatever_the_thread_count() {
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let (one, three) = (pool(1), pool(3));
    for n in [4095, 4096, 4097, 65_535, 65_536, 65_537, 3 * 65_536 + 4101] {
        let bits = synth::realistic_weights(1, n, 0.02, n as u64);
        for layout in [Layout::Lanes, Layout::Warp] {
            for rows in [1, 3, 256] {
                let opts = EncodeOptions { segment_rows: rows, layout };
                let a = one.install(|| compress_with(&bits, &opts));
                let b = three.install(|| compress_with(&bits, &opts));
                assert!(a == b, "{n} elements, R = {rows}, {layout:?}");
                assert_eq!(a.data_crc, df11_host::container::data_crc(&bits));
                assert_eq!(decode_reference(&a).as_deref(), Ok(&bits[..]), "{n} elements, R = {rows}, {layout:?}");
            }
        }
    }
}

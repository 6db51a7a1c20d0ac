//! The lanes9 layout (FORMAT.md section 12): the encoder, the reference
//! decoder and the fast decoder agree bit for bit on every kind of input;
//! the container round-trips as version 3 and is read in place alike;
//! corrupt streams and raw bytes are rejected by both decoders alike, never
//! with a panic (the GPU kernel's logic is tested in `df11-host`'s unit
//! tests, `gpu/tests.rs`).

mod common;

use common::{decode_both, judge_alike, shuffled};
use df11_host::decode::{self, DecodeOptions, Runs};
use df11_host::encode::compress_exact;
use df11_host::synth::{self, SplitMix64};
use df11_host::{CompressedTensor, EncodeOptions, Error, Layout, compress_with, decode_reference};
use proptest::prelude::*;

/// Lanes9 even where lanes would be smaller, so that every kind of tensor
/// reaches the lanes9 decoders.
fn enc(bits: &[u16], rows: u32) -> CompressedTensor {
    compress_exact(bits, &EncodeOptions { segment_rows: rows, layout: Layout::Lanes9 })
}

/// Compresses, checks the reference and the fast decoders bit-exact (into a
/// buffer, in place from the container's bytes, compared, and in runs), and
/// that the serialized form round-trips as a version-3 container.
fn check(bits: &[u16], rows: u32) -> CompressedTensor {
    let t = enc(bits, rows);
    let what = format!("{} elements, R = {rows}", bits.len());
    assert_eq!(t.layout, Layout::Lanes9);
    assert_eq!(decode_reference(&t).as_deref(), Ok(bits), "reference, {what}");
    for r in decode_both(&t, &DecodeOptions::default()) {
        assert_eq!(r.as_deref(), Ok(bits), "fast, {what}");
    }
    let bytes = t.to_bytes();
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 3, "lanes9 containers are version 3");
    assert_eq!(bytes.len() as u64, t.serialized_len());
    assert_eq!(CompressedTensor::from_bytes(&bytes).as_ref(), Ok(&t));
    let mut out = vec![0u16; bits.len()];
    decode::decode_container_into(&bytes, &mut out, &DecodeOptions::default()).unwrap();
    assert_eq!(out, bits, "in place, {what}");
    assert_eq!(decode::compare_container(&bytes, bits, &DecodeOptions::default()), Ok(None), "{what}");
    let mut runs = Runs::new(&bytes, &DecodeOptions::default()).unwrap();
    let mut buf = vec![0u16; runs.segment_elems().max(1)];
    let mut got = Vec::new();
    loop {
        let n = runs.next_into(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    runs.finish().unwrap();
    assert_eq!(got, bits, "runs, {what}");
    t
}

#[test]
fn all_65536_patterns() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    for rows in [1, 3, 256] {
        check(&bits, rows);
    }
    check(&shuffled(bits, 5), 2);
}

/// Tensors of 2M elements and more, with 8 or more per pair of symbols they
/// hold, are coded two symbols a lookup: here all 512 symbols (each bit
/// pattern 32 times, scrambled), so nearly every pair entry, 12-bit codes
/// included, is used.
#[test]
fn pair_table_all_patterns() {
    check(&shuffled((0..32 << 16).map(|i| i as u16).collect(), 7), 1024);
}

#[test]
fn lengths_zero_one_odd() {
    for n in [0, 1, 2, 7, 8, 9, 15, 255, 256, 257, 8191, 70_001] {
        // One 9-bit symbol (no code), the raw bits still all there.
        let t = check(&(0..n).map(|i| 0x3c40 | (i as u16 & 0x803f)).collect::<Vec<_>>(), 2);
        assert_eq!(t.max_len, 0);
        check(&(0..n).map(|i| (i * 40_503) as u16).collect::<Vec<_>>(), 1);
        check(&synth::realistic_weights(1, n, 0.02, n as u64), 3);
    }
}

/// Segments longer than a decode chunk (512 rows), with partial last rows.
#[test]
fn segments_spanning_decode_chunks() {
    for n in [512 * 256, 512 * 256 + 1, 1300 * 256 + 77] {
        check(&synth::realistic_weights(1, n, 0.02, n as u64), 1024);
    }
}

/// The default options, and so `compress`, write this layout at R = 1024,
/// and the lanes layout for a tensor that lanes9 would not make smaller.
#[test]
fn lanes9_is_the_default() {
    let opts = EncodeOptions::default();
    assert_eq!((opts.layout, opts.segment_rows), (Layout::Lanes9, df11_host::format::DEFAULT_SEGMENT_ROWS));
    assert_eq!(Layout::default(), Layout::Lanes9);
    let bits = synth::realistic_weights(64, 4096, 0.02, 3);
    let t = df11_host::compress_bits(&bits);
    assert_eq!(t, enc(&bits, df11_host::format::DEFAULT_SEGMENT_ROWS));
    check(&bits, t.segment_rows);
    // 384 weights: the 256-byte code-length table costs more than lanes9 saves.
    let small = synth::realistic_weights(1, 384, 0.02, 4);
    let lanes = EncodeOptions { layout: Layout::Lanes, ..Default::default() };
    assert_eq!(df11_host::compress_bits(&small), compress_with(&small, &lanes));
}

/// The point of the layout: on realistic weights, smaller than the lanes
/// layout (by 0.029 to 0.05 bits/weight on these, measured).
#[test]
fn smaller_than_lanes_on_realistic_weights() {
    for seed in 0..4 {
        let bits = synth::realistic_weights(1, 1 << 20, 0.02, seed);
        let nine = enc(&bits, 1024).serialized_len() as f64 * 8.0 / bits.len() as f64;
        let opts = EncodeOptions { layout: Layout::Lanes, ..Default::default() };
        let lanes = compress_with(&bits, &opts).serialized_len() as f64 * 8.0 / bits.len() as f64;
        assert!(nine < lanes - 0.02, "seed {seed}: lanes9 {nine:.4}, lanes {lanes:.4}");
    }
}

#[test]
fn version_2_cannot_hold_lanes9() {
    let t = enc(&synth::realistic_weights(1, 5000, 0.02, 1), 1);
    let mut bytes = t.to_bytes();
    bytes[4] = 2;
    df11_host::container::reseal_crcs(&mut bytes);
    let e = CompressedTensor::from_bytes(&bytes).unwrap_err();
    assert!(matches!(e, Error::Invalid { field: "layout", .. }), "{e}");
    bytes[4] = 1;
    df11_host::container::reseal_crcs(&mut bytes);
    assert!(CompressedTensor::from_bytes(&bytes).is_err());
}

/// A partial last group stores a byte an element with bit 7 clear; a set
/// bit there is invalid, not silently ignored.
#[test]
fn partial_group_top_bits_are_invalid() {
    let mut t = enc(&synth::realistic_weights(1, 1003, 0.02, 2), 1);
    assert_eq!(t.sign_mantissa.len(), 7 * 125 + 3);
    let last = t.sign_mantissa.len() - 1;
    t.sign_mantissa[last] |= 0x80;
    let e = t.validate().unwrap_err();
    assert!(matches!(e, Error::Invalid { field: "sign_mantissa", .. }), "{e}");
    assert!(decode_reference(&t).is_err());
}

/// Asked for lanes9, the encoder writes lanes where that is smaller: a
/// small tensor (the 128 more bytes of code lengths outweigh a bit less per
/// element) or one whose mantissa's top bit is a fair coin.
#[test]
fn lanes9_falls_back_to_lanes_where_smaller() {
    let opts = EncodeOptions { segment_rows: 1024, layout: Layout::Lanes9 };
    for (bits, fallback) in [
        (synth::realistic_weights(1, 300, 0.02, 4), true),
        (synth::realistic_weights(1, 200_000, 0.02, 4), false),
        // The mantissa's top bit a fair coin for every exponent: it costs
        // the 9-bit code a whole bit, as the raw byte.
        ((0..20_000u16).map(|i| (120 + i % 7) << 7 | (i / 7 % 2) << 6 | (i & 0x803f)).collect(), true),
        // Constant instead: the 9-bit code has it for free.
        ((0..20_000u16).map(|i| (120 + i % 7) << 7 | (i & 0x803f)).collect(), false),
    ] {
        let t = compress_with(&bits, &opts);
        let exact = compress_exact(&bits, &opts).serialized_len();
        let lanes = compress_with(&bits, &EncodeOptions { layout: Layout::Lanes, ..opts }).serialized_len();
        assert_eq!(t.layout == Layout::Lanes, fallback, "{} elements: lanes9 {exact} bytes, lanes {lanes}", bits.len());
        assert_eq!(t.serialized_len(), exact.min(lanes), "{} elements", bits.len());
        assert_eq!(decode_reference(&t).as_deref(), Ok(&bits[..]));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn arbitrary_patterns(bits in proptest::collection::vec(any::<u16>(), 0..3000), rows in 1u32..5) {
        check(&bits, rows);
    }

    #[test]
    fn realistic_any_length(seed in any::<u64>(), n in 0usize..70_000, rows in prop::sample::select(vec![1u32, 2, 5, 16, 64, 1024])) {
        check(&synth::realistic_weights(1, n, 0.02, seed), rows);
    }

    #[test]
    fn few_symbols(seed in any::<u64>(), n in 0usize..5000, k in 1u16..6, rows in 1u32..4) {
        let mut rng = SplitMix64::new(seed);
        let bits: Vec<u16> = (0..n).map(|_| (240 + (rng.next_u64() % k as u64) as u16) << 6 | (rng.next_u64() as u16 & 0x803f)).collect();
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

/// The encoder's output does not depend on the thread count.
#[test]
fn same_output_whatever_the_thread_count() {
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let (one, three) = (pool(1), pool(3));
    for n in [4095, 65_536, 65_537, 3 * 65_536 + 4101] {
        let bits = synth::realistic_weights(1, n, 0.02, n as u64);
        for rows in [1, 256] {
            let opts = EncodeOptions { segment_rows: rows, layout: Layout::Lanes9 };
            let a = one.install(|| compress_exact(&bits, &opts));
            let b = three.install(|| compress_exact(&bits, &opts));
            assert!(a == b, "{n} elements, R = {rows}");
            assert_eq!(decode_reference(&a).as_deref(), Ok(&bits[..]));
        }
    }
}

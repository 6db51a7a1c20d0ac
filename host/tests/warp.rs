//! The warp layout's CPU decoder (on one thread and in parallel) bit-exact
//! against the original bits and the reference decoder, on every kind of input; corrupted
//! streams and offsets give an error or the exact original, never a panic.

mod common;

use common::{ONE_THREAD, decode_both, shuffled};
use df11_host::decode::{self, DecodeOptions};
use df11_host::synth;
use df11_host::{CompressedTensor, EncodeOptions, Error, Layout, compress_with, decode_reference};
use proptest::prelude::*;

fn enc(bits: &[u16], rows: u32) -> CompressedTensor {
    compress_with(bits, &EncodeOptions { segment_rows: rows, layout: Layout::Warp })
}

fn check(bits: &[u16], rows: u32) {
    let t = enc(bits, rows);
    let reference = decode_reference(&t).expect("reference decodes");
    assert_eq!(reference, bits);
    for r in decode_both(&t, &DecodeOptions::default()) {
        assert_eq!(r.as_deref(), Ok(bits), "{} elements, R = {rows}", bits.len());
    }
    assert_eq!(decode::decode(&t, &ONE_THREAD).as_deref(), Ok(bits));
    assert_eq!(decode::decode(&t, &DecodeOptions::default()).as_deref(), Ok(bits));
}

#[test]
fn all_65536_patterns() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    for rows in [1, 3, 256] {
        check(&bits, rows);
    }
}

#[test]
fn realistic_many_segments() {
    let bits = synth::realistic_weights(1201, 250, 0.02, 7);
    for rows in [1, 2, 3, 256] {
        check(&bits, rows);
    }
}

#[test]
fn single_valued_lengths_zero_one_odd() {
    for n in [0, 1, 2, 7, 255, 256, 257, 8191, 70_001] {
        check(&vec![0x3c00u16; n], 2);
        check(&(0..n).map(|i| (i * 40_503) as u16).collect::<Vec<_>>(), 1);
    }
}

#[test]
fn worst_case_12_bit_codes() {
    // Exponent e appears 2^(20-e) times: a geometric histogram whose Huffman
    // code would run past 12 bits, so the length limit binds.
    let mut bits = Vec::new();
    for e in 0..21u16 {
        bits.extend(std::iter::repeat_n(e << 7 | (e & 0x7f), 1 << (20 - e).min(18)));
    }
    let bits = shuffled(bits, 3);
    let t = enc(&bits, 3);
    assert_eq!(t.max_len, 12);
    check(&bits, 3);
    check(&bits, 256);
}

#[test]
fn wrong_output_length() {
    let t = enc(&[1, 2, 3], 1);
    let mut out = vec![0u16; 4];
    assert!(matches!(
        decode::decode_into(&t, &mut out, &ONE_THREAD),
        Err(Error::OutputLength { expected: 3, actual: 4 })
    ));
    assert!(matches!(decode::decode_into(&t, &mut out, &DecodeOptions::default()), Err(Error::OutputLength { .. })));
}

#[test]
fn crc_is_checked_unless_opted_out() {
    let bits = synth::realistic_weights(10, 256, 0.02, 1);
    let mut t = enc(&bits, 1);
    t.data_crc ^= 1;
    for r in decode_both(&t, &DecodeOptions::default()) {
        assert!(matches!(r, Err(Error::Checksum { what: "data", .. })));
    }
    for r in decode_both(&t, &DecodeOptions { verify_crc: false, ..Default::default() }) {
        assert_eq!(r.as_deref(), Ok(&bits[..]));
    }
}

/// With the CRC checked, a corrupted tensor decodes to an error or to exactly
/// the original; without it, the two fast decoders at least agree.
fn corrupt_outcome(t: &CompressedTensor, bits: &[u16]) -> Result<(), TestCaseError> {
    let [a, b] = decode_both(t, &DecodeOptions::default());
    prop_assert!(a.as_deref().map_or(true, |v| v == bits));
    prop_assert!(b.as_deref().map_or(true, |v| v == bits));
    prop_assert_eq!(a.is_ok(), b.is_ok());
    let [a, b] = decode_both(t, &DecodeOptions { verify_crc: false, ..Default::default() });
    prop_assert_eq!(a.ok(), b.ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_u16(bits in prop::collection::vec(any::<u16>(), 0..3000), rows in 1u32..4) {
        check(&bits, rows);
    }

    /// Realistic weights at lengths and segment sizes where the paired-step
    /// path (full rows, ≥ 129 words left in the segment) and the one-step
    /// path (a segment's last rows, partial rows) both run, and hand over
    /// to each other at every row position.
    #[test]
    fn realistic_any_length(n in 0usize..40_000, rows in prop::sample::select(vec![1u32, 2, 5, 16, 64, 1024]), seed in any::<u64>()) {
        let bits = synth::realistic_weights(1, n, 0.02, seed);
        check(&bits, rows);
    }

    #[test]
    fn few_exponents(raw in prop::collection::vec(0u16..6, 0..4000), rows in 1u32..4) {
        let bits: Vec<u16> = raw.iter().enumerate().map(|(i, &e)| (e + 120) << 7 | (i as u16 & 0x807f)).collect();
        check(&bits, rows);
    }

    #[test]
    fn corrupt_words(seed in any::<u64>(), flips in prop::collection::vec((any::<usize>(), any::<u32>()), 1..4)) {
        let bits = synth::realistic_weights(20, 250, 0.02, seed);
        let mut t = enc(&bits, 1);
        for &(i, x) in &flips {
            let n = t.words.len();
            t.words[i % n] ^= x | 1;
        }
        corrupt_outcome(&t, &bits)?;
    }

    #[test]
    fn corrupt_offsets(seed in any::<u64>(), i in any::<usize>(), d in -3i64..4) {
        let bits = synth::realistic_weights(12, 250, 0.02, seed);
        let mut t = enc(&bits, 1);
        let n = t.stream_offsets.len();
        let o = &mut t.stream_offsets[i % n];
        *o = (*o as i64 + d).clamp(0, u32::MAX as i64) as u32;
        corrupt_outcome(&t, &bits)?;
    }

    #[test]
    fn corrupt_code_lengths(seed in any::<u64>(), i in 0usize..256, l in 0u8..14) {
        let bits = synth::realistic_weights(4, 256, 0.02, seed);
        let mut t = enc(&bits, 1);
        t.code_lengths[i] = l;
        let [a, b] = decode_both(&t, &DecodeOptions::default());
        prop_assert!(a.as_deref().map_or(true, |v| v == bits));
        prop_assert_eq!(a.is_ok(), b.is_ok());
    }
}

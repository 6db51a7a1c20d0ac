//! The fast decoders (single-threaded and parallel) against the original bits
//! and the reference decoder, on every kind of input, plus corrupted streams.

use df11_host::fast::scratch::{encode, weights};
use df11_host::fast::{self, DecodeOptions};
use proptest::prelude::*;

type Decoded = Result<Vec<u16>, fast::DecodeError>;

fn both(t: &df11_host::CompressedTensor) -> (Decoded, Decoded) {
    let n = t.num_elements as usize;
    let mut a = vec![0u16; n];
    let mut b = vec![0u16; n];
    let ra = fast::decode_fast_into(t, &mut a).map(|_| a);
    let rb = fast::decode_parallel_into(t, &mut b).map(|_| b);
    (ra, rb)
}

fn check(bits: &[u16], rows: u32) {
    let t = encode(bits, rows);
    let (a, b) = both(&t);
    assert_eq!(a.as_deref(), Ok(bits), "single-threaded, {} elements, R = {rows}", bits.len());
    assert_eq!(b.as_deref(), Ok(bits), "parallel, {} elements, R = {rows}", bits.len());
}

#[test]
fn all_patterns() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    for rows in [1, 3, 256] {
        check(&bits, rows);
    }
}

#[test]
fn realistic_many_segments() {
    let bits = weights(300_001, 0.02, 7);
    for rows in [1, 2, 3, 256] {
        check(&bits, rows);
    }
}

#[test]
fn single_valued_and_tiny() {
    for n in [0, 1, 2, 7, 255, 256, 257, 70_000] {
        check(&vec![0x3c00u16; n], 2);
        check(&(0..n as u16).collect::<Vec<_>>(), 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary(bits in prop::collection::vec(any::<u16>(), 0..3000), rows in 1u32..4) {
        check(&bits, rows);
    }

    #[test]
    fn corrupt_words_never_panic(seed in any::<u64>(), flips in prop::collection::vec((any::<usize>(), any::<u32>()), 1..4)) {
        let bits = weights(5000, 0.02, seed);
        let mut t = encode(&bits, 1);
        for &(i, x) in &flips {
            let n = t.words.len();
            t.words[i % n] ^= x | 1;
        }
        let (a, b) = both(&t);
        // Corruption is either detected or (never in practice) harmless.
        prop_assert!(a.as_deref().map_or(true, |v| v == bits));
        prop_assert!(b.as_deref().map_or(true, |v| v == bits));
        prop_assert_eq!(a.is_ok(), b.is_ok());
    }

    #[test]
    fn corrupt_offsets_never_panic(seed in any::<u64>(), i in any::<usize>(), d in -3i64..4) {
        let bits = weights(3000, 0.02, seed);
        let mut t = encode(&bits, 1);
        let n = t.segment_offsets.len();
        let o = &mut t.segment_offsets[i % n];
        *o = (*o as i64 + d).clamp(0, u32::MAX as i64) as u32;
        let opts = DecodeOptions { verify_crc: false };
        let mut out = vec![0u16; bits.len()];
        let r = fast::decode_fast_into_with(&t, &mut out, &opts);
        prop_assert!(d == 0 || r.is_err() || out == bits);
        let r = fast::decode_parallel_into_with(&t, &mut out, &opts);
        prop_assert!(d == 0 || r.is_err() || out == bits);
    }
}

//! Containers read in place: [`TensorView`] parses against the owned
//! tensors, and the one-pass decoders (`decode_container_into`,
//! `compare_container`, which check the record CRC segment by segment)
//! against the reference decoder and against the strict parse, corrupt
//! inputs included.

use df11_host::container::reseal_crcs;
use df11_host::decode::{Runs, compare_container, compare_view, decode_container_into, decode_view_into};
use df11_host::synth::SplitMix64;
use df11_host::{
    CompressedTensor, DecodeOptions, EncodeOptions, Error, Layout, TensorView, compress_with, decode_reference,
};
use proptest::prelude::*;
use std::borrow::Cow;

mod common;
use common::shuffled;

fn enc(bits: &[u16], rows: u32, layout: Layout) -> CompressedTensor {
    compress_with(bits, &EncodeOptions { segment_rows: rows, layout })
}

/// Weight-like bits: a few exponents common, the rest rare, every mantissa.
fn weights(n: usize, seed: u64) -> Vec<u16> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            let e = 120 + (r % 7) as u16 + if r >> 60 == 0 { (r >> 8) as u16 % 100 } else { 0 };
            ((r >> 32) as u16 & 0x807f) | ((e & 0xff) << 7)
        })
        .collect()
}

/// `bytes` copied to `shift` bytes past a 4-aligned address.
fn placed(bytes: &[u8], shift: usize) -> (Vec<u32>, usize) {
    let mut buf = vec![0u32; (bytes.len() + shift).div_ceil(4) + 1];
    bytemuck::cast_slice_mut::<u32, u8>(&mut buf)[shift..shift + bytes.len()].copy_from_slice(bytes);
    (buf, shift)
}

const OPTS: [DecodeOptions; 2] =
    [DecodeOptions { verify_crc: true, parallel: false }, DecodeOptions { verify_crc: true, parallel: true }];

/// The layouts, by a test's choice.
const LAYOUTS: [Layout; 3] = [Layout::Lanes, Layout::Warp, Layout::Lanes9];

/// A change to any one element, in any bit, is found where it is, by every
/// layout, with and without the data CRC: the lanes joins compare full rows
/// in registers (in three interleaved parts with the CRC), the rest of a
/// segment is compared after it is stored. Segments of 1 and 3 rows, and a
/// partial last row.
#[test]
fn compare_finds_any_single_change() {
    let n = 2 * 3 * 256 + 300;
    let bits = weights(n, 11);
    for layout in LAYOUTS {
        for rows in [1, 3] {
            let bytes = enc(&bits, rows, layout).to_bytes();
            for verify_crc in [true, false] {
                let opts = DecodeOptions { verify_crc, parallel: false };
                assert_eq!(compare_container(&bytes, &bits, &opts), Ok(None), "{layout:?} R = {rows}");
                let mut expected = bits.clone();
                for i in 0..n {
                    let bit = 1 << (i * 7 % 16);
                    expected[i] ^= bit;
                    let found = compare_container(&bytes, &expected, &opts);
                    assert_eq!(found, Ok(Some((i as u64, bits[i]))), "{layout:?} R = {rows} crc {verify_crc} at {i}");
                    expected[i] ^= bit;
                }
            }
        }
    }
}

#[test]
fn views_parse_as_the_owned_tensors_at_every_alignment() {
    for (n, rows, layout) in
        [(0, 1, Layout::Lanes), (1, 1, Layout::Warp), (3_001, 2, Layout::Lanes), (70_001, 1, Layout::Warp)]
    {
        let t = enc(&weights(n, n as u64), rows, layout);
        let bytes = t.to_bytes();
        for shift in 0..4 {
            let (buf, at) = placed(&bytes, shift);
            let b = &bytemuck::cast_slice::<u32, u8>(&buf)[at..at + bytes.len()];
            let v = TensorView::from_bytes(b).unwrap();
            assert_eq!(v, t.view(), "n {n} shift {shift}");
            assert_eq!(v.to_owned(), t);
            // The data is borrowed; words and offsets too where aligned.
            assert_eq!(v.sign_mantissa.as_ptr(), b[b.len() - 4 - n.next_multiple_of(4)..].as_ptr());
            let aligned = cfg!(target_endian = "little") && shift == 0;
            assert_eq!(matches!(v.words, Cow::Borrowed(_)), aligned, "n {n} shift {shift}");
            assert_eq!(matches!(v.stream_offsets, Cow::Borrowed(_)), aligned);
        }
    }
}

#[test]
fn in_place_decodes_all_patterns_at_every_alignment() {
    let bits = shuffled((0..=u16::MAX).collect(), 11);
    for layout in [Layout::Lanes, Layout::Warp] {
        let bytes = enc(&bits, 1, layout).to_bytes();
        for shift in 0..4 {
            let (buf, at) = placed(&bytes, shift);
            let b = &bytemuck::cast_slice::<u32, u8>(&buf)[at..at + bytes.len()];
            for opts in &OPTS {
                let mut out = vec![0u16; bits.len()];
                decode_container_into(b, &mut out, opts).unwrap();
                assert!(out == bits, "{layout:?} shift {shift}");
                assert_eq!(compare_container(b, &bits, opts), Ok(None));
            }
        }
    }
}

/// The strict path: parse with the record CRC checked, then decode.
fn strict_decode(bytes: &[u8], n: usize, opts: &DecodeOptions) -> Result<Vec<u16>, Error> {
    let v = TensorView::from_bytes(bytes)?;
    let mut out = vec![0u16; n];
    decode_view_into(&v, &mut out, opts).map(|()| out)
}

fn in_place_decode(bytes: &[u8], n: usize, opts: &DecodeOptions) -> Result<Vec<u16>, Error> {
    let mut out = vec![0u16; n];
    decode_container_into(bytes, &mut out, opts).map(|()| out)
}

/// The tensor through [`Runs`], `segs` segments per run, concatenated.
fn runs_decode(bytes: &[u8], segs: usize, opts: &DecodeOptions) -> Result<Vec<u16>, Error> {
    let mut runs = Runs::new(bytes, opts)?;
    let mut buf = vec![0u16; runs.segment_elems() * segs];
    let mut out = Vec::new();
    loop {
        let n = runs.next_into(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    runs.finish()?;
    Ok(out)
}

fn strict_compare(
    bytes: &[u8],
    expected: &[u16],
    opts: &DecodeOptions,
) -> Result<Option<df11_host::decode::Difference>, Error> {
    compare_view(&TensorView::from_bytes(bytes)?, expected, opts)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Well-formed containers: the in-place decode gives the reference's
    /// bits, and the compare finds exactly the first element changed.
    #[test]
    fn in_place_matches_the_reference(
        n in 0usize..40_000, seed in any::<u64>(), rows in 1u32..4, layout in 0usize..3,
        changes in proptest::collection::vec(any::<usize>(), 0..3), par in any::<bool>(),
    ) {
        let layout = LAYOUTS[layout];
        let t = enc(&weights(n, seed), rows, layout);
        let want = decode_reference(&t).unwrap();
        let bytes = t.to_bytes();
        let opts = &OPTS[par as usize];
        prop_assert_eq!(in_place_decode(&bytes, n, opts), Ok(want.clone()));
        for segs in [1, 2, 5] {
            prop_assert_eq!(runs_decode(&bytes, segs, opts), Ok(want.clone()), "{} segments per run", segs);
        }
        let mut expected = want.clone();
        for &c in &changes {
            if n > 0 {
                expected[c % n] ^= 1 << (c % 16);
            }
        }
        let first = expected.iter().zip(&want).position(|(a, b)| a != b);
        let found = compare_container(&bytes, &expected, opts);
        prop_assert_eq!(found.clone(), Ok(first.map(|i| (i as u64, want[i]))));
        prop_assert_eq!(found, strict_compare(&bytes, &expected, opts));
        // The wrong length is refused, not compared.
        if n > 0 {
            let short = in_place_decode(&bytes, n - 1, opts);
            prop_assert!(matches!(short, Err(Error::OutputLength { .. })), "{:?}", short);
        }
    }

    /// Corrupt containers, with stale or recomputed CRCs: the in-place paths
    /// give exactly the strict path's result (the same error, or the same
    /// bits), so deferring the record CRC changes no verdict.
    #[test]
    fn in_place_fails_as_the_strict_parse_does(
        n in 1usize..20_000, seed in any::<u64>(), lanes in any::<bool>(),
        flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..4), reseal in any::<bool>(), par in any::<bool>(),
    ) {
        let layout = if lanes { Layout::Lanes } else { Layout::Warp };
        let t = enc(&weights(n, seed), 1, layout);
        let want = decode_reference(&t).unwrap();
        let mut bytes = t.to_bytes();
        for &(at, bit) in &flips {
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
        }
        if reseal {
            reseal_crcs(&mut bytes);
        }
        let opts = &OPTS[par as usize];
        let strict = strict_decode(&bytes, n, opts);
        prop_assert_eq!(in_place_decode(&bytes, n, opts), strict.clone());
        // In runs too: the same verdict, whichever run meets the fault.
        for segs in [1, 3] {
            prop_assert_eq!(runs_decode(&bytes, segs, opts), strict.clone(), "{} segments per run", segs);
        }
        prop_assert_eq!(compare_container(&bytes, &want, opts), strict_compare(&bytes, &want, opts));
    }
}

#[test]
fn runs_refuse_a_buffer_shorter_than_a_segment_and_an_early_finish() {
    let bits = weights(3 * 256 + 5, 9);
    let bytes = enc(&bits, 1, Layout::Lanes).to_bytes();
    let opts = &OPTS[0];
    let mut runs = Runs::new(&bytes, opts).unwrap();
    assert_eq!(runs.num_elements(), bits.len() as u64);
    assert!(matches!(runs.next_into(&mut [0u16; 255]), Err(Error::OutputLength { .. })));
    let mut buf = vec![0u16; 256];
    assert_eq!(runs.next_into(&mut buf), Ok(256));
    assert_eq!(buf, bits[..256]);
    assert!(matches!(runs.finish(), Err(Error::OutputLength { .. })));
    // The last run is the rest, however short.
    let mut runs = Runs::new(&bytes, opts).unwrap();
    let mut buf = vec![0u16; 3 * 256];
    assert_eq!(runs.next_into(&mut buf), Ok(3 * 256));
    assert_eq!(runs.next_into(&mut buf[..5]), Ok(5));
    assert_eq!(runs.next_into(&mut buf), Ok(0));
    runs.finish().unwrap();
}

#[test]
fn a_stale_record_crc_is_reported_as_such() {
    let bits = weights(50_000, 3);
    for layout in [Layout::Lanes, Layout::Warp] {
        let t = enc(&bits, 1, layout);
        let good = t.to_bytes();
        // One flip in the words, in the sign+mantissa bytes, and in the CRC itself.
        let w0 = good.len() - 4 - bits.len().next_multiple_of(4) - 8;
        for at in [w0, good.len() - 10, good.len() - 1] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x20;
            for opts in &OPTS {
                let e = in_place_decode(&bytes, bits.len(), opts).unwrap_err();
                assert!(matches!(e, Error::Checksum { what: "record", .. }), "{layout:?} at {at}: {e}");
                let e = compare_container(&bytes, &bits, opts).unwrap_err();
                assert!(matches!(e, Error::Checksum { what: "record", .. }), "{layout:?} at {at}: {e}");
                let e = runs_decode(&bytes, 2, opts).unwrap_err();
                assert!(matches!(e, Error::Checksum { what: "record", .. }), "{layout:?} at {at}: {e}");
            }
        }
    }
}

//! Round trips through the encoder, the container and the reference decoder.

use df11_gpu::format::{MAX_CODE_LEN, TABLE_BITS, TABLE_SIZE};
use df11_gpu::table;
use df11_host::encode::huffman;
use df11_host::synth::{self, Dist, SplitMix64, SynthParams};
use df11_host::{CompressedTensor, EncodeOptions, Error, Group, Layout, compress_with, decode_reference};
use proptest::prelude::*;

mod common;
use common::shuffled;

/// The warp layout, which the byte-level tests here were written against
/// (version 1 containers, one offset per segment); lanes files have their
/// own in `lanes.rs`.
fn enc(bits: &[u16], rows: u32) -> CompressedTensor {
    enc_with(bits, rows, Layout::Warp)
}

fn enc_with(bits: &[u16], rows: u32, layout: Layout) -> CompressedTensor {
    compress_with(bits, &EncodeOptions { segment_rows: rows, layout })
}

/// Encodes in both layouts, checks each tensor and its serialization,
/// decodes, compares bits; returns the warp one.
fn round_trip(bits: &[u16], rows: u32) -> CompressedTensor {
    for layout in [Layout::Lanes, Layout::Warp] {
        let t = enc_with(bits, rows, layout);
        t.validate().expect("encoder output is valid");
        assert_eq!(decode_reference(&t).expect("decodes"), bits, "rows {rows} {layout:?}");
        let bytes = t.to_bytes();
        assert_eq!(bytes.len() as u64, t.serialized_len());
        let back = CompressedTensor::from_bytes(&bytes).expect("parses");
        assert_eq!(back, t);
        assert_eq!(back.to_bytes(), bytes);
    }
    enc(bits, rows)
}

fn skewed(n: usize, seed: u64, dist: Dist) -> Vec<u16> {
    let cols = 97;
    let mut v = synth::weights_with(
        n.div_ceil(cols),
        cols,
        &SynthParams {
            scale: 0.02,
            dist,
            row_log_sigma: 0.5,
            outlier_col_frac: 0.01,
            outlier_elem_prob: 1e-3,
            outlier_gain: 10.0,
            seed,
        },
    );
    v.truncate(n);
    v
}

#[test]
fn empty_and_single() {
    let t = round_trip(&[], 1);
    assert_eq!((t.max_len, t.only_symbol, t.num_segments(), t.words.len()), (0, 0, 0, 0));
    let t = round_trip(&[0x3f80], 1);
    assert_eq!((t.max_len, t.only_symbol, t.words.len()), (0, 0x7f, 0));
    round_trip(&[0xffff], 3);
}

#[test]
fn single_exponent_many_mantissas() {
    let bits: Vec<u16> = (0..5000u32).map(|i| 0xc100 | (i as u16 & 0x7f) ^ ((i as u16 & 1) << 15)).collect();
    for rows in [1, 2, 256] {
        let t = round_trip(&bits, rows);
        assert_eq!(t.max_len, 0);
        assert_eq!(t.only_symbol, 0x82);
    }
}

#[test]
fn two_exponents() {
    let bits: Vec<u16> = (0..3001u32).map(|i| if i % 3 == 0 { 0x0000 } else { 0x7f80 | (i as u16 & 0x7f) }).collect();
    let t = round_trip(&bits, 1);
    assert_eq!(t.max_len, 1);
    round_trip(&bits, 5);
}

#[test]
fn all_65536_patterns() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for rows in [1, 3, 256] {
        round_trip(&all, rows);
    }
    round_trip(&shuffled(all, 7), 2);
}

#[test]
fn all_256_exponents_with_12_bit_codes() {
    // Exponent i appears about 2^(i/16) times, steep enough that package-merge
    // must clip many codes to 12 bits.
    let mut bits = Vec::new();
    for e in 0..256u32 {
        let count = 1 + (1u64 << (e / 16).min(14)) as u32 / 4;
        bits.extend((0..count).map(|i| ((e << 7) as u16) | (i as u16 & 0x7f) | ((i as u16 & 0x80) << 8)));
    }
    let bits = shuffled(bits, 11);
    let t = round_trip(&bits, 4);
    assert_eq!(t.max_len as u32, MAX_CODE_LEN);
    assert!(t.lengths8().iter().all(|&l| l > 0));
}

#[test]
fn lengths_around_boundaries() {
    let base = skewed(5000, 3, Dist::Laplace);
    for n in [1, 2, 7, 8, 9, 255, 256, 257, 511, 512, 513, 767, 769, 1023, 1025, 2047, 4099] {
        for rows in [1, 2, 3] {
            round_trip(&base[..n], rows);
        }
    }
}

#[test]
fn deterministic() {
    let bits = skewed(300_000, 5, Dist::Gaussian);
    let a = enc(&bits, 2);
    let b = enc(&bits, 2);
    assert_eq!(a.to_bytes(), b.to_bytes());
    // Parallel encode of many segments equals what a single thread produces.
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| enc(&bits, 2));
    assert_eq!(single, a);
}

#[test]
fn canonical_codes_agree_with_the_decode_table() {
    let bits = skewed(50_000, 9, Dist::Laplace);
    let t = enc(&bits, 256);
    let mut tab = [0u16; TABLE_SIZE];
    assert_eq!(table::build(t.lengths8(), t.only_symbol as u8, &mut tab), Ok(t.max_len as u32));
    let codes = huffman::canonical_codes(&t.code_lengths);
    for (s, (&code, &l)) in codes.iter().zip(&t.code_lengths).enumerate() {
        let l = l as u32;
        if l == 0 {
            continue;
        }
        let first = (code << (TABLE_BITS - l)) as usize;
        for e in &tab[first..first + (1 << (TABLE_BITS - l))] {
            assert_eq!((table::entry_symbol(*e) as usize, table::entry_len(*e)), (s, l));
        }
    }
}

#[test]
fn every_truncation_errors() {
    let bits = skewed(700, 1, Dist::Gaussian);
    let bytes = enc(&bits, 1).to_bytes();
    for len in 0..bytes.len() {
        assert!(CompressedTensor::from_bytes(&bytes[..len]).is_err(), "prefix {len}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(CompressedTensor::from_bytes(&long), Err(Error::TrailingBytes(1)));
}

#[test]
fn every_bit_flip_errors_or_decodes_exactly() {
    let bits = skewed(600, 2, Dist::Laplace);
    let bytes = enc(&bits, 1).to_bytes();
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        if let Ok(t) = CompressedTensor::from_bytes(&b)
            && let Ok(out) = decode_reference(&t)
        {
            assert_eq!(out, bits, "flip {i}");
        }
    }
}

#[test]
fn huge_header_claims_do_not_allocate() {
    let t = enc(&[1, 2, 3], 1);
    let mut b = t.to_bytes();
    // N = 2^39, S consistent with it; the record then cannot fit.
    let n: u64 = 1 << 39;
    b[16..24].copy_from_slice(&n.to_le_bytes());
    b[28..32].copy_from_slice(&(n.div_ceil(256) as u32).to_le_bytes());
    assert!(matches!(CompressedTensor::from_bytes(&b), Err(Error::Truncated { .. })));
}

#[test]
fn group_round_trip() {
    let a = enc(&skewed(1000, 1, Dist::Gaussian), 1);
    let b = enc(&[], 2);
    let c = enc(&[5; 300], 3);
    let g = Group { tensors: vec![a, b, c] };
    let bytes = g.to_bytes();
    assert_eq!(bytes.len() as u64, g.serialized_len());
    let back = Group::from_bytes(&bytes).unwrap();
    assert_eq!(back, g);
    assert_eq!(back.to_bytes(), bytes);
    assert!(CompressedTensor::from_bytes(&bytes).is_err());
    assert_eq!(Group::from_bytes(&Group::default().to_bytes()).unwrap(), Group::default());
}

#[test]
fn corrupt_stream_is_detected() {
    let bits = skewed(2000, 4, Dist::Gaussian);
    let t = enc(&bits, 1);
    assert!(t.num_segments() >= 2);
    // Move a word from segment 0 to segment 1: both segments are now wrong.
    let mut bad = t.clone();
    bad.stream_offsets[1] -= 1;
    assert!(matches!(decode_reference(&bad), Err(Error::CorruptStream { segment: 0 })));
    // Change a word: some symbol changes or the stream length is off; either way an error.
    let mut bad = t.clone();
    bad.words[3] ^= 0x8000_0000;
    assert!(decode_reference(&bad).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_patterns(bits in proptest::collection::vec(any::<u16>(), 0..3000), rows in 1u32..4) {
        round_trip(&bits, rows);
    }

    #[test]
    fn few_exponents(seed in any::<u64>(), n in 0usize..5000, k in 1u16..6, rows in 1u32..4) {
        let mut rng = SplitMix64::new(seed);
        let bits: Vec<u16> = (0..n).map(|_| {
            let r = rng.next_u64();
            // Skewed choice among k exponents near 127.
            let e = 120 + (r.trailing_zeros() as u16 % k);
            (e << 7) | (r >> 32) as u16 & 0x807f
        }).collect();
        round_trip(&bits, rows);
    }

    #[test]
    fn realistic(seed in any::<u64>(), n in 0usize..20_000, laplace in any::<bool>(), rows in 1u32..5) {
        round_trip(&skewed(n, seed, if laplace { Dist::Laplace } else { Dist::Gaussian }), rows);
    }
}

/// Segments of more rows than the encoder codes lane by lane at a time (32),
/// with a partial last row, for long codes (near-random exponents) and short.
#[test]
fn segments_spanning_coding_blocks() {
    let mut rng = SplitMix64::new(7);
    let random: Vec<u16> = (0..100_003).map(|_| rng.next_u64() as u16).collect();
    let realistic = skewed(100_003, 7, Dist::Gaussian);
    for rows in [33, 100, 1024] {
        round_trip(&random, rows);
        round_trip(&realistic, rows);
    }
}

/// A hand-worked example of FORMAT.md section 7, refills after a lane's bits
/// are exhausted included, so that encoder and reference decoder cannot agree
/// on a misreading of the interleaving rule without this test noticing.
#[test]
fn interleaving_worked_example() {
    // Exponent (code) per length: 127 "0", 126 "10", 125 "110", 124 "1110",
    // 123 "11110", 122 "111110", 121 "1111110", 119 "11111110", 120 "11111111".
    let code = |e: u16| -> &'static str {
        match e {
            127 => "0",
            126 => "10",
            125 => "110",
            124 => "1110",
            123 => "11110",
            122 => "111110",
            121 => "1111110",
            119 => "11111110",
            120 => "11111111",
            _ => unreachable!(),
        }
    };
    // Counts 128, 64, 32, 16, 8, 4, 2, 1, 1 give exactly the lengths above (max_len 8).
    let mut lanes: Vec<Vec<u16>> = vec![
        vec![119, 120, 121, 121, 127, 127, 127, 127], // 34 bits; refills at k = 0 and 4
        vec![122, 122, 122, 122, 123, 127, 127, 127], // 32 bits; a zero word at k = 5
    ];
    let mut rest: Vec<u16> = [(123, 7), (124, 16), (125, 32), (126, 64), (127, 121)]
        .iter()
        .flat_map(|&(e, c)| std::iter::repeat_n(e, c))
        .collect();
    while !rest.is_empty() {
        lanes.push(rest.drain(..8).collect());
    }
    // Lane 2: 123 ×7, 124 (39 bits, refill at k = 5). Lane 3: 124 ×8 (32 bits,
    // zero word at k = 7). Lane 4: 124 ×7, 125 (31 bits, zero word at k = 7).
    assert_eq!(lanes.len(), 32);
    let mut bits = vec![0u16; 256];
    for (j, lane) in lanes.iter().enumerate() {
        for (k, &e) in lane.iter().enumerate() {
            let i = 8 * j + k;
            bits[i] = e << 7 | (i as u16 * 37) & 0x807f;
        }
    }
    let lane_words: Vec<Vec<u32>> = lanes
        .iter()
        .map(|lane| {
            let mut s: String = lane.iter().map(|&e| code(e)).collect();
            while !s.len().is_multiple_of(32) {
                s.push('0');
            }
            (0..s.len() / 32).map(|w| u32::from_str_radix(&s[32 * w..32 * w + 32], 2).unwrap()).collect()
        })
        .collect();
    let mut want: Vec<u32> = (0..32).map(|j| lane_words[j][0]).collect(); // k = 0: every lane
    want.push(lane_words[0][1]); // k = 4
    want.push(0); // k = 5, lane 1: its 32 bits are all loaded
    want.push(lane_words[2][1]); // k = 5, lane 2
    want.extend([0, 0]); // k = 7, lanes 3 and 4
    let t = round_trip(&bits, 1);
    assert_eq!(t.max_len, 8);
    assert_eq!(t.stream_offsets, [0, 37]);
    assert_eq!(t.words, want);
}

/// Rewrites the container header CRC after a test edits bytes 0..12.
fn fix_header_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[..12]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn header_errors_are_specific() {
    let good = enc(&[1, 2, 3], 1).to_bytes();
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(CompressedTensor::from_bytes(&b), Err(Error::BadMagic));
    for v in [0, 4] {
        let mut b = good.clone();
        b[4] = v;
        fix_header_crc(&mut b);
        assert_eq!(CompressedTensor::from_bytes(&b), Err(Error::UnsupportedVersion(v as u16)));
    }
    // A warp-layout container reads the same as version 2 and 3.
    for v in [2, 3] {
        let mut b = good.clone();
        b[4] = v;
        fix_header_crc(&mut b);
        assert_eq!(CompressedTensor::from_bytes(&b), CompressedTensor::from_bytes(&good));
    }
    let mut b = good.clone();
    b[6] = 1;
    fix_header_crc(&mut b);
    assert_eq!(CompressedTensor::from_bytes(&b), Err(Error::UnsupportedFlags(1)));
    let mut b = good.clone();
    b[8] = 2;
    assert!(matches!(CompressedTensor::from_bytes(&b), Err(Error::Checksum { what: "header", .. })));
    let mut b = good.clone();
    let last = b.len() - 5;
    b[last] ^= 1;
    assert!(matches!(CompressedTensor::from_bytes(&b), Err(Error::Checksum { what: "record", .. })));
    let mut t = enc(&[1, 2, 3], 1);
    t.data_crc ^= 1;
    assert!(matches!(decode_reference(&t), Err(Error::Checksum { what: "data", .. })));
}

#[test]
fn validate_rejects_each_broken_invariant() {
    let good = enc(&skewed(3000, 8, Dist::Laplace), 1);
    good.validate().unwrap();
    type Edit = fn(&mut CompressedTensor);
    let edits: [(&str, Edit); 12] = [
        ("num_elements", |t| t.num_elements = 1 << 40),
        ("segment_rows", |t| t.segment_rows = 0),
        ("segment_rows", |t| t.segment_rows = (1 << 16) + 1),
        ("sign_mantissa", |t| {
            t.sign_mantissa.pop();
        }),
        ("stream_offsets", |t| {
            t.stream_offsets.pop();
        }),
        ("stream_offsets", |t| t.stream_offsets[0] = 1),
        ("stream_offsets", |t| t.stream_offsets.swap(1, 2)),
        ("stream_offsets", |t| {
            t.words.push(0);
        }),
        ("max_len", |t| t.max_len += 1),
        ("code_lengths", |t| {
            // Lengthen one code: the Kraft sum drops below one.
            let s = t.code_lengths.iter().position(|&l| l > 0 && l < t.max_len).unwrap();
            t.code_lengths[s] += 1;
        }),
        ("code_lengths", |t| t.code_lengths[0] = 13),
        ("only_symbol", |t| t.only_symbol = 1),
    ];
    for (field, edit) in edits {
        let mut t = good.clone();
        edit(&mut t);
        match t.validate() {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert!(decode_reference(&t).is_err(), "{field}");
    }
    // Empty tensors must say so exactly.
    let mut t = enc(&[], 1);
    t.only_symbol = 3;
    assert!(t.validate().is_err());
    let mut out = [0u16; 2];
    assert_eq!(
        df11_host::decode_reference_into(&good, &mut out),
        Err(Error::OutputLength { expected: 3000, actual: 2 })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn single_value(v in any::<u16>(), n in 0usize..3000, rows in 1u32..4) {
        let t = round_trip(&vec![v; n], rows);
        prop_assert_eq!(t.words.len(), 0);
    }

    /// Arbitrary damage to a valid tensor's fields: the reference decoder
    /// returns an error or the original, and never panics.
    #[test]
    fn damaged_tensors_never_panic(
        seed in any::<u64>(),
        field in 0usize..8,
        pos in any::<usize>(),
        val in any::<u32>(),
    ) {
        let bits = skewed(1500, seed, Dist::Gaussian);
        let mut t = enc(&bits, 1);
        match field {
            0 => t.num_elements = val as u64,
            1 => t.segment_rows = val,
            2 => t.max_len = val as u8,
            3 => t.only_symbol = val as u16,
            4 => t.code_lengths[pos % 256] = val as u8 % 16,
            5 => { let i = pos % t.stream_offsets.len(); t.stream_offsets[i] = val % (t.words.len() as u32 + 2); }
            6 => { let i = pos % t.words.len(); t.words[i] ^= 1 << (val % 32); }
            _ => t.words.truncate(pos % t.words.len()),
        }
        if let Ok(out) = decode_reference(&t) {
            prop_assert_eq!(out, bits);
        }
    }
}

#[test]
fn encoding_into_an_earlier_tensors_vectors_gives_the_same_tensor() {
    // Spares larger and smaller than the tensor, of the other layout, empty;
    // on one thread (one words vector) and on several (parts joined).
    let tensors: Vec<(Vec<u16>, EncodeOptions)> =
        [(70_001, Layout::Lanes, 2), (300, Layout::Warp, 1), (600_000, Layout::Lanes, 1)]
            .iter()
            .enumerate()
            .map(|(i, &(n, layout, rows))| {
                (skewed(n, i as u64, Dist::Gaussian), EncodeOptions { segment_rows: rows, layout })
            })
            .collect();
    let plain: Vec<CompressedTensor> = tensors.iter().map(|(b, o)| compress_with(b, o)).collect();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for ((bits, opts), want) in tensors.iter().zip(&plain) {
        for spare in plain.iter().cloned().map(Some).chain([None]) {
            assert_eq!(&df11_host::compress_reusing(bits, opts, spare.clone()), want);
            assert_eq!(&one.install(|| df11_host::compress_reusing(bits, opts, spare)), want);
        }
    }
}

#[test]
fn pieces_make_the_container() {
    for (n, layout) in [(0, Layout::Lanes), (1, Layout::Warp), (70_001, Layout::Lanes), (5_003, Layout::Warp)] {
        let t = enc_with(&skewed(n, n as u64, Dist::Gaussian), 1, layout);
        let mut joined = Vec::new();
        let mut pieces = 0;
        t.write_pieces(|p| {
            joined.extend_from_slice(p);
            pieces += 1;
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(joined, t.to_bytes(), "n {n}");
        assert!(pieces >= 5);
        // And into a buffer that held something else.
        let mut reused = vec![7u8; 99];
        t.to_bytes_into(&mut reused);
        assert_eq!(reused, joined);
    }
}

//! The decode kernel's logic, run on the block emulator, bit-exact against the
//! CPU reference decoder and the original bits.
//!
//! Every input is encoded in the warp and lanes layouts twice: by the
//! production encoder, and by a small encoder written here straight from
//! `docs/FORMAT.md` §5–8 that can also produce codes the production encoder
//! would not choose (worst-case 12-bit codes on purpose). Given the
//! production encoder's code lengths, the spec encoder must reproduce its
//! words exactly. Lanes9 (section 12) is encoded by the production encoder
//! and judged by the reference decoder.

use super::{GroupLayout, Slicing, decode_emulated, decode_emulated_layout, decode_emulated_sliced, index_emulated};
use crate::container::{CompressedTensor, Group, Layout, data_crc};
use crate::encode::{EncodeOptions, compress_exact, compress_with};
use crate::error::Error;
use crate::reference::decode_reference;
use df11_gpu::bits::{exponent, sign_mantissa};
use df11_gpu::format::{LANE_RUN, LANES, MAX_CODE_LEN, ROW_ELEMS, SYMBOLS};
use proptest::prelude::*;

/// A complete code over the exponents present in `bits`: a balanced tree, or
/// with `skewed` the lengths 1, 2, …, m for the first `m` symbols by value and
/// a balanced tree of the rest under the remaining depth-`m` node, with `m` as
/// large as the 12-bit limit allows (13 symbols get 1..=11, 12, 12).
fn code_lengths(bits: &[u16], skewed: bool) -> [u8; SYMBOLS] {
    let mut present: Vec<usize> = bits.iter().map(|&b| exponent(b) as usize).collect();
    present.sort_unstable();
    present.dedup();
    let mut lengths = [0u8; SYMBOLS];
    if present.len() <= 1 {
        return lengths;
    }
    // k >= 2 leaves: 2^d - (k - 2^d) at depth d, the rest one deeper.
    let balanced = |k: usize, depth0: u8| -> Vec<u8> {
        let d = k.ilog2() as usize;
        let extra = k - (1 << d);
        let mut v = vec![depth0 + d as u8; (1 << d) - extra];
        v.extend(std::iter::repeat_n(depth0 + d as u8 + 1, 2 * extra));
        v
    };
    let p = present.len();
    let m = if skewed {
        (0..=11usize).rev().find(|&m| p >= m + 2 && m + (p - m).next_power_of_two().ilog2() as usize <= 12).unwrap_or(0)
    } else {
        0
    };
    let mut lens: Vec<u8> = (1..=m as u8).collect();
    lens.extend(balanced(p - m, m as u8));
    debug_assert_eq!(lens.iter().map(|&l| 1u64 << (MAX_CODE_LEN - u32::from(l))).sum::<u64>(), 1 << MAX_CODE_LEN);
    for (&s, &l) in present.iter().zip(&lens) {
        lengths[s] = l;
    }
    lengths
}

/// Canonical codes (`docs/FORMAT.md` §5): `(code, length)` per symbol.
fn canonical(lengths: &[u8; SYMBOLS]) -> Vec<(u32, u32)> {
    let mut codes = vec![(0, 0); SYMBOLS];
    let mut next = 0u32;
    for len in 1..=MAX_CODE_LEN {
        for (s, &l) in lengths.iter().enumerate() {
            if u32::from(l) == len {
                codes[s] = (next >> (MAX_CODE_LEN - len), len);
                next += 1 << (MAX_CODE_LEN - len);
            }
        }
    }
    codes
}

/// Encodes `bits` per `docs/FORMAT.md` §6–7 with the code from [`code_lengths`].
fn encode(bits: &[u16], segment_rows: u32, skewed: bool) -> CompressedTensor {
    encode_with_lengths(bits, segment_rows, code_lengths(bits, skewed), Layout::Warp)
}

/// Encodes `bits` per `docs/FORMAT.md` §6–8 in `layout` with the given complete code.
fn encode_with_lengths(bits: &[u16], segment_rows: u32, lengths: [u8; SYMBOLS], layout: Layout) -> CompressedTensor {
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    let codes = canonical(&lengths);
    let n = bits.len();
    let seg_elems = segment_rows as usize * ROW_ELEMS;
    let mut words = Vec::new();
    let mut offsets = vec![0u32];
    for seg in (0..n).step_by(seg_elems) {
        let rows = (n - seg).min(seg_elems).div_ceil(ROW_ELEMS);
        let slot = |r: usize, j: usize, k: usize| {
            let e = seg + r * ROW_ELEMS + j * LANE_RUN + k;
            (e < n).then(|| exponent(bits[e]) as usize)
        };
        // Each lane's bit string, cut into MSB-first words.
        let mut lane_words: Vec<Vec<u32>> = vec![Vec::new(); LANES];
        for (j, lw) in lane_words.iter_mut().enumerate() {
            let (mut acc, mut nacc) = (0u64, 0u32);
            for r in 0..rows {
                for k in 0..LANE_RUN {
                    if let Some(s) = slot(r, j, k) {
                        let (c, l) = codes[s];
                        acc = acc << l | u64::from(c);
                        nacc += l;
                        if nacc >= 32 {
                            lw.push((acc >> (nacc - 32)) as u32);
                            nacc -= 32;
                            acc &= (1 << nacc) - 1;
                        }
                    }
                }
            }
            if nacc > 0 {
                lw.push((acc << (32 - nacc)) as u32);
            }
        }
        if layout == Layout::Lanes {
            // §8: each lane's words whole, lane by lane, each word as its
            // stream bytes read little-endian.
            for lw in &lane_words {
                words.extend(lw.iter().map(|w| w.swap_bytes()));
                offsets.push(words.len() as u32);
            }
            continue;
        }
        // The interleaving procedure, with the decoder's refill rule.
        let mut nbits = [0u32; LANES];
        let mut next = [0usize; LANES];
        for r in 0..rows {
            for k in 0..LANE_RUN {
                for j in 0..LANES {
                    if let Some(s) = slot(r, j, k) {
                        if nbits[j] < u32::from(max_len) {
                            words.push(lane_words[j].get(next[j]).copied().unwrap_or(0));
                            next[j] += 1;
                            nbits[j] += 32;
                        }
                        nbits[j] -= codes[s].1;
                    }
                }
            }
        }
        offsets.push(words.len() as u32);
    }
    CompressedTensor {
        num_elements: n as u64,
        segment_rows,
        max_len,
        only_symbol: if max_len == 0 && n > 0 { exponent(bits[0]).into() } else { 0 },
        code_lengths: std::array::from_fn(|i| lengths.get(i).copied().unwrap_or(0)),
        data_crc: data_crc(bits),
        layout,
        stream_offsets: offsets,
        words,
        sign_mantissa: bits.iter().map(|&b| sign_mantissa(b)).collect(),
    }
}

/// Decodes `group` on the emulator and checks every element was written
/// exactly once (`EmuOut` panics on a second write) with the reference
/// decoder's bits, which must be `original`.
fn check_decoded(group: &Group, original: &[u16], grid: u32, warps: u32) {
    let reference: Vec<u16> =
        group.tensors.iter().map(|t| decode_reference(t).expect("reference decodes")).collect::<Vec<_>>().concat();
    assert!(reference == original, "the reference decoder disagrees with the input");
    for slicing in slicings(group) {
        if slicing != Slicing::Off {
            check_index_kernel(group, slicing, grid, warps);
        }
        let (out, report) = decode_emulated_sliced(group, slicing, grid, warps).expect("valid group");
        report.expect("kernel reports no error");
        assert_eq!(out.len(), reference.len());
        if let Some(i) = out.iter().zip(&reference).position(|(a, b)| *a != Some(*b)) {
            panic!(
                "element {i}: got {:04x?}, want {:04x} (grid {grid}, warps {warps}, {slicing:?})",
                out[i], reference[i]
            );
        }
    }
}

/// The index kernel, emulated, writes every entry once, and on a sound
/// group exactly what the CPU walk finds (which the decodes here then use).
fn check_index_kernel(group: &Group, slicing: Slicing, grid: u32, warps: u32) -> GroupLayout {
    let mut planned = GroupLayout::new(group).expect("valid group");
    planned.plan_slices(slicing);
    let got = index_emulated(&planned, grid, warps);
    assert!(got.iter().all(Option::is_some), "an index entry left unwritten ({slicing:?})");
    planned.lane_index = got.into_iter().map(Option::unwrap).collect();
    if group.tensors.iter().all(|t| decode_reference(t).is_ok()) {
        let mut walked = GroupLayout::new(group).expect("valid group");
        walked.slice(slicing);
        assert_eq!(planned.descs, walked.descs);
        assert!(planned.lane_index == walked.lane_index, "index kernel and CPU walk disagree ({slicing:?})");
    }
    planned
}

/// The ways to run `group`: whole segments, and where a lanes tensor has
/// segments of several rows, slices of one row and of two (the index's
/// shortest slices, and a last slice cut short by an odd segment).
fn slicings(group: &Group) -> Vec<Slicing> {
    let sliceable = group.tensors.iter().any(|t| t.layout != Layout::Warp && t.segment_rows > 1 && t.num_elements > 0);
    if sliceable { vec![Slicing::Off, Slicing::Rows(1), Slicing::Rows(2)] } else { vec![Slicing::Off] }
}

/// Encodes each `(bits, segment_rows, skewed)` with both encoders in both
/// layouts, decodes each as one group, and the tensors in alternating layouts
/// as another (both kernels on one output), and checks the results.
fn check_group(inputs: &[(Vec<u16>, u32, bool)], grid: u32, warps: u32) {
    let original: Vec<u16> = inputs.iter().flat_map(|(b, _, _)| b.iter().copied()).collect();
    for layout in [Layout::Warp, Layout::Lanes] {
        let spec = Group {
            tensors: inputs.iter().map(|(b, r, s)| encode_with_lengths(b, *r, code_lengths(b, *s), layout)).collect(),
        };
        check_decoded(&spec, &original, grid, warps);
        let production = Group {
            tensors: inputs
                .iter()
                .map(|(b, r, _)| compress_with(b, &EncodeOptions { segment_rows: *r, layout }))
                .collect(),
        };
        for (t, (b, r, _)) in production.tensors.iter().zip(inputs) {
            assert_eq!(&encode_with_lengths(b, *r, *t.lengths8(), layout), t, "spec and production encoders disagree");
        }
        check_decoded(&production, &original, grid, warps);
    }
    // Lanes9 has no spec encoder here (the reference decoder judges it).
    let lanes9 = Group {
        tensors: inputs
            .iter()
            .map(|(b, r, _)| compress_exact(b, &EncodeOptions { segment_rows: *r, layout: Layout::Lanes9 }))
            .collect(),
    };
    check_decoded(&lanes9, &original, grid, warps);
    let mixed = Group {
        tensors: inputs
            .iter()
            .enumerate()
            .map(|(i, (b, r, _))| {
                let layout = [Layout::Lanes, Layout::Warp, Layout::Lanes9][i % 3];
                compress_exact(b, &EncodeOptions { segment_rows: *r, layout })
            })
            .collect(),
    };
    check_decoded(&mixed, &original, grid, warps);
}

/// Deterministic pseudo-random numbers (SplitMix64).
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// bf16 bits shaped like trained weights: exponents clustered a little below
/// 127 (geometric tail), arbitrary sign and mantissa.
fn realistic(n: usize, seed: u64) -> Vec<u16> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let x = r();
            let e = 122u64.saturating_sub((x >> 8).trailing_zeros() as u64) as u16;
            ((x as u16) & 0x807F) | e << 7
        })
        .collect()
}

#[test]
fn single_symbol_tensors() {
    for n in [0usize, 1, 7, 8, 9, 255, 256, 257, 1000] {
        let bits: Vec<u16> = (0..n as u16).map(|i| 0x3F80 | (i & 0x807F)).collect();
        check_group(&[(bits, 1, false)], 2, 2);
    }
}

#[test]
fn two_symbols_one_bit_codes() {
    let bits: Vec<u16> = (0..3000u16).map(|i| if i % 3 == 0 { 0x3F80 } else { 0x4000 | (i & 0x7F) }).collect();
    check_group(&[(bits, 1, false)], 3, 2);
}

#[test]
fn all_bit_patterns() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    check_group(&[(bits, 4, false)], 2, 4);
}

#[test]
fn worst_case_twelve_bit_codes() {
    // 13 exponents with lengths 1..=11, 12, 12; the rarest dominate the data so
    // most lanes refill almost every step.
    let mut r = rng(7);
    let bits: Vec<u16> = (0..5000).map(|_| ((r() % 13) as u16 + 100) << 7 | (r() as u16 & 0x807F)).collect();
    let lengths = code_lengths(&bits, true);
    assert_eq!(lengths.iter().max(), Some(&12));
    check_group(&[(bits, 2, true)], 2, 2);
}

#[test]
fn multi_tensor_group_with_unaligned_offsets() {
    let mut r = rng(3);
    let inputs = vec![
        (realistic(1001, 1), 1, false),
        (vec![], 3, false),
        ((0..77).map(|_| r() as u16).collect(), 1, false),
        (vec![0x4049; 513], 2, false),
        (realistic(2048, 2), 2, true),
        ((0..300).map(|_| r() as u16).collect(), 1, true),
    ];
    check_group(&inputs, 3, 2);
    check_group(&inputs, 1, 1);
}

#[test]
fn corrupt_offsets_are_flagged_not_fatal() {
    let bits = realistic(4 * ROW_ELEMS + 5, 9);
    let mut t = encode(&bits, 1, false);
    assert!(t.stream_offsets.len() > 3);
    // Move a boundary: one segment gets a word too many, the next one too few.
    t.stream_offsets[1] += 1;
    let (_, report) = decode_emulated(&Group { tensors: vec![t.clone()] }, 2, 2).expect("layout is consistent");
    assert_eq!(report, Err(Error::CorruptStream { segment: 0 }));
    // Garbage words: the stream decodes to other symbols, but nothing breaks.
    for w in &mut t.words {
        *w = !*w;
    }
    t.stream_offsets[1] -= 1;
    let (out, _) = decode_emulated(&Group { tensors: vec![t] }, 2, 2).expect("layout is consistent");
    assert!(out.iter().all(Option::is_some));
}

#[test]
fn group_layoutrejects_inconsistent_tensors() {
    let good = encode(&realistic(600, 4), 1, false);
    let mut cases: Vec<(&str, CompressedTensor)> = Vec::new();
    let mut t = good.clone();
    t.stream_offsets.pop();
    cases.push(("offset count", t));
    let mut t = good.clone();
    t.stream_offsets.swap(1, 2);
    cases.push(("decreasing offsets", t));
    let mut t = good.clone();
    t.words.push(0);
    cases.push(("word count", t));
    let mut t = good.clone();
    t.sign_mantissa.pop();
    cases.push(("sign+mantissa count", t));
    let mut t = good.clone();
    t.max_len += 1;
    cases.push(("max_len", t));
    let mut t = good.clone();
    t.code_lengths[255] = 12;
    cases.push(("incomplete code", t));
    let mut t = good.clone();
    t.segment_rows = 0;
    cases.push(("zero rows", t));
    let mut t = good;
    t.num_elements = 1 << 40;
    cases.push(("too many elements", t));
    for (what, t) in cases {
        match GroupLayout::new(&Group { tensors: vec![t] }) {
            Err(Error::Invalid { .. }) => {}
            other => panic!("{what}: accepted or wrong error: {:?}", other.map(|_| ())),
        }
    }
    // The same checks guard lanes tensors, whose offsets are per lane.
    let lanes = compress_with(&realistic(600, 4), &EncodeOptions { segment_rows: 1, layout: Layout::Lanes });
    let mut t = lanes.clone();
    t.stream_offsets.pop();
    let mut u = lanes;
    u.stream_offsets.swap(3, 4);
    for (what, t) in [("lanes offset count", t), ("lanes decreasing offsets", u)] {
        match GroupLayout::new(&Group { tensors: vec![t] }) {
            Err(Error::Invalid { .. }) => {}
            other => panic!("{what}: accepted or wrong error: {:?}", other.map(|_| ())),
        }
    }
}

/// What the emulated kernel reports for a lanes tensor must be what the
/// reference decoder finds wrong with its streams: the same first corrupt
/// segment, or nothing when the streams are well formed (a checksum mismatch
/// is not the kernel's to find). Layout validation may refuse the tensor
/// first; then the reference decoder must refuse it too.
fn check_lanes_verdict(t: CompressedTensor) {
    let reference = decode_reference(&t);
    let group = Group { tensors: vec![t] };
    if GroupLayout::new(&group).is_err() {
        assert!(reference.is_err(), "layout refused a tensor the reference decodes");
        return;
    }
    // Each slicing with the CPU walk's index, and with the index kernel's.
    let runs = slicings(&group).into_iter().flat_map(|slicing| {
        let cpu = decode_emulated_sliced(&group, slicing, 2, 2).expect("layout accepted above");
        // Without an index both are the same run.
        let gpu = (slicing != Slicing::Off)
            .then(|| (slicing, "GPU index", decode_emulated_layout(&check_index_kernel(&group, slicing, 2, 2), 2, 2)));
        std::iter::once((slicing, "CPU index", cpu)).chain(gpu)
    });
    for (slicing, how, (out, report)) in runs {
        let slicing = format!("{slicing:?}, {how}");
        match &reference {
            Err(Error::CorruptStream { segment }) => {
                assert_eq!(report, Err(Error::CorruptStream { segment: *segment }), "{slicing:?}")
            }
            Err(Error::Invalid { .. }) => panic!("the layout accepted a tensor the reference finds invalid"),
            _ => assert_eq!(report, Ok(()), "kernel flagged well-formed streams ({slicing:?})"),
        }
        assert!(out.iter().all(Option::is_some), "every element is written, corrupt or not ({slicing:?})");
    }
}

#[test]
fn lanes_corrupt_streams_are_flagged_like_the_reference() {
    for layout in [Layout::Lanes, Layout::Lanes9] {
        corrupt_streams_are_flagged_like_the_reference(layout);
    }
}

fn corrupt_streams_are_flagged_like_the_reference(layout: Layout) {
    // One row a segment, and (sliced too) segments of 3 rows and 1.
    for segment_rows in [1, 3] {
        corrupt_streams_flagged(layout, segment_rows);
    }
}

fn corrupt_streams_flagged(layout: Layout, segment_rows: u32) {
    let bits = realistic(3 * ROW_ELEMS + 77, 5);
    let good = compress_exact(&bits, &EncodeOptions { segment_rows, layout });
    check_lanes_verdict(good.clone());
    // A word more in one lane and one fewer in the next.
    let mut t = good.clone();
    t.stream_offsets[5] += 1;
    check_lanes_verdict(t);
    // Non-zero padding after a lane's last code.
    let mut t = good.clone();
    let last = t.stream_offsets[40] as usize - 1;
    t.words[last] ^= 0x0100_0000;
    check_lanes_verdict(t);
    // Every single-bit flip of the first lanes' words.
    for i in 0..good.words.len().min(64) {
        for b in [0, 7, 13, 31] {
            let mut t = good.clone();
            t.words[i] ^= 1 << b;
            check_lanes_verdict(t);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bits(bits in prop::collection::vec(any::<u16>(), 0..1500), rows in 1u32..4, grid in 1u32..4, warps in 1u32..3) {
        check_group(&[(bits, rows, false)], grid, warps);
    }

    #[test]
    fn realistic_bits(n in 0usize..2500, seed in any::<u64>(), rows in 1u32..4, skewed in any::<bool>()) {
        check_group(&[(realistic(n, seed), rows, skewed)], 2, 2);
    }

    #[test]
    fn lanes_random_corruption(n in 1usize..1200, seed in any::<u64>(), flips in prop::collection::vec((any::<usize>(), 0u32..32), 1..4), shift in prop::option::of((any::<usize>(), any::<bool>())), nine in any::<bool>(), segment_rows in 1u32..4) {
        let layout = if nine { Layout::Lanes9 } else { Layout::Lanes };
        let mut t = compress_exact(&realistic(n, seed), &EncodeOptions { segment_rows, layout });
        if !t.words.is_empty() {
            for &(i, b) in &flips {
                let len = t.words.len();
                t.words[i % len] ^= 1 << b;
            }
        }
        if let Some((i, up)) = shift {
            // Move one inner lane boundary by a word (validation may refuse it).
            let k = 1 + i % (t.stream_offsets.len() - 1).max(1);
            if k + 1 < t.stream_offsets.len() {
                t.stream_offsets[k] = if up { t.stream_offsets[k] + 1 } else { t.stream_offsets[k].saturating_sub(1) };
            }
        }
        check_lanes_verdict(t);
    }

    #[test]
    fn groups(lens in prop::collection::vec(0usize..700, 1..5), seed in any::<u64>(), single in any::<bool>()) {
        let inputs: Vec<(Vec<u16>, u32, bool)> = lens.iter().enumerate().map(|(i, &n)| {
            let bits = if single && i % 2 == 1 { vec![0xBF80; n] } else { realistic(n, seed ^ i as u64) };
            (bits, 1 + i as u32 % 2, i % 3 == 0)
        }).collect();
        check_group(&inputs, 2, 2);
    }
}

#[test]
fn bad_launch_shape_is_reported_not_decoded() {
    use crate::emu::{EmuOut, Launch, run};
    use df11_gpu::decode::{ErrorReport, decode_group, decode_group_lanes, decode_group_lanes9};
    use df11_gpu::format::{ERR_LAUNCH, MULTI_TABLE_WORDS, TABLE_WORDS};
    use std::sync::atomic::AtomicU32;
    // Each kernel needs room for its own table.
    for (layout, words) in
        [(Layout::Warp, TABLE_WORDS), (Layout::Lanes, MULTI_TABLE_WORDS), (Layout::Lanes9, MULTI_TABLE_WORDS)]
    {
        let t = compress_exact(&realistic(300, 1), &EncodeOptions { segment_rows: 1, layout });
        let group_layout = GroupLayout::new(&Group { tensors: vec![t] }).expect("valid");
        for launch in [
            Launch { grid_dim: 1, block_dim: 48, shared_words: words },
            Launch { grid_dim: 1, block_dim: 32, shared_words: words - 1 },
        ] {
            let out = EmuOut::new(300);
            let report = ErrorReport { flags: AtomicU32::new(0), first_bad_segment: AtomicU32::new(u32::MAX) };
            run(launch, |t| match layout {
                Layout::Warp => decode_group(t, &group_layout.input(), &out, &report),
                Layout::Lanes => decode_group_lanes(t, &group_layout.input(), &out, &report),
                Layout::Lanes9 => decode_group_lanes9(t, &group_layout.input(), &out, &report),
            });
            assert_eq!(report.flags.into_inner(), ERR_LAUNCH, "{layout:?} {launch:?}");
            assert!(out.into_vec().iter().all(Option::is_none));
        }
    }
}

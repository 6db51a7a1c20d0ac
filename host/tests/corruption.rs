//! Corruption sweeps: every bit of small containers flipped, every truncation,
//! runs of zeroed bytes. Each corrupted container must be rejected (by the
//! parser or by a decoder) or decode to exactly the original bits — never a
//! panic, never a different tensor. The reference and the fast CPU decoders
//! must also agree on every one.
//!
//! Each corruption is tried twice: as is, where the CRC32Cs should catch it,
//! and with the header and record CRCs recomputed afterwards, which models a
//! corruption the checksums miss and so tests the structural checks and the
//! data CRC underneath them.

use df11_host::container::reseal_crcs;
use df11_host::decode::{DecodeOptions, decode};
use df11_host::encode::compress_exact;
use df11_host::synth::realistic_weights;
use df11_host::{CompressedTensor, EncodeOptions, Group, Layout, decode_reference};

/// A group of several tensors with several segments each: lengths not a
/// multiple of 8, small `segment_rows`, one single-symbol and one empty tensor.
fn originals() -> Vec<(Vec<u16>, u32)> {
    let mut v = realistic_weights(1, 777, 0.02, 1);
    // A few specials so the code has rare, long codes.
    v[5] = 0x7FC1;
    v[300] = 0x0001;
    v[600] = 0xFF80;
    vec![
        (v, 1),
        (realistic_weights(1, 301, 0.5, 2), 1),
        (realistic_weights(1, 13, 1.0, 3), 2),
        (vec![0x3F80; 45], 1),
        (vec![], 1),
    ]
}

fn encode(tensors: &[(Vec<u16>, u32)], layout: Layout) -> Group {
    Group {
        tensors: tensors
            .iter()
            .map(|(bits, rows)| compress_exact(bits, &EncodeOptions { segment_rows: *rows, layout }))
            .collect(),
    }
}

/// Decodes `t` with every CPU decoder: they must agree (all `Err`, or all
/// `Ok` with the same bits), and the verdict is returned.
fn decode_all(t: &CompressedTensor, what: &str) -> Option<Vec<u16>> {
    let reference = decode_reference(t).ok();
    let fast = decode(t, &DecodeOptions { parallel: false, ..Default::default() }).ok();
    let parallel = decode(t, &DecodeOptions::default()).ok();
    assert!(fast == reference, "{what}: fast decoder disagrees with the reference");
    assert!(parallel == reference, "{what}: parallel decoder disagrees with the reference");
    reference
}

/// The rule: `Err` somewhere, or every tensor back bit for bit. Returns
/// whether the input was accepted.
fn check_group(bytes: &[u8], original: &[(Vec<u16>, u32)], what: &str) -> bool {
    let Ok(g) = Group::from_bytes(bytes) else { return false };
    let decoded: Option<Vec<Vec<u16>>> = g.tensors.iter().map(|t| decode_all(t, what)).collect();
    let Some(decoded) = decoded else { return false };
    assert_eq!(decoded.len(), original.len(), "{what}: accepted with a different tensor count");
    for (i, (d, (o, _))) in decoded.iter().zip(original).enumerate() {
        assert!(d == o, "{what}: tensor {i} decodes to different bits");
    }
    true
}

/// Same for a one-tensor container through `CompressedTensor::from_bytes`.
fn check_single(bytes: &[u8], original: &[u16], what: &str) -> bool {
    let Ok(t) = CompressedTensor::from_bytes(bytes) else { return false };
    let Some(d) = decode_all(&t, what) else { return false };
    assert!(d == original, "{what}: decodes to different bits");
    true
}

/// Applies `corrupt` to a copy of `clean`, checks it as is and with fixed-up
/// CRCs. Returns how many of the two were accepted.
fn sweep_one(clean: &[u8], corrupt: impl Fn(&mut Vec<u8>), check: &dyn Fn(&[u8], &str) -> bool, what: &str) -> usize {
    let mut b = clean.to_vec();
    corrupt(&mut b);
    let raw = check(&b, what);
    reseal_crcs(&mut b);
    let fixed = check(&b, &format!("{what} (CRCs fixed)"));
    usize::from(raw) + usize::from(fixed)
}

fn sweep(clean: &[u8], check: &dyn Fn(&[u8], &str) -> bool) {
    // Every bit. A raw flip must always be caught: CRC32C detects every
    // single-bit error. With the CRCs fixed, only a flip in the unread tail
    // of a lane's last word may decode (to the same bits).
    for byte in 0..clean.len() {
        for bit in 0..8 {
            let mut b = clean.to_vec();
            b[byte] ^= 1 << bit;
            assert!(!check(&b, &format!("bit {bit} of byte {byte}")), "single-bit flip at byte {byte} accepted");
            reseal_crcs(&mut b);
            check(&b, &format!("bit {bit} of byte {byte} (CRCs fixed)"));
        }
    }
    // Every truncation, and every extension by a zero byte.
    for len in 0..clean.len() {
        assert!(!check(&clean[..len], &format!("truncated to {len}")), "truncation to {len} accepted");
        sweep_one(clean, |b| b.truncate(len), check, &format!("truncated to {len}"));
    }
    sweep_one(clean, |b| b.push(0), check, "one trailing byte");
    // Runs of zeros, every start; CRC32C catches every burst up to 32 bits, so
    // only the longer runs are left to the other checks even without fix-up.
    for run in [1usize, 2, 3, 4, 8, 16, 64] {
        for start in 0..clean.len() {
            let end = (start + run).min(clean.len());
            sweep_one(clean, |b| b[start..end].fill(0), check, &format!("zeroed {start}..{end}"));
        }
    }
}

#[test]
fn corrupt_group_is_rejected_or_exact() {
    let original = originals();
    for layout in [Layout::Warp, Layout::Lanes, Layout::Lanes9] {
        let g = encode(&original, layout);
        let clean = g.to_bytes();
        assert!(check_group(&clean, &original, "clean"));
        sweep(&clean, &|b, what| check_group(b, &original, &format!("{} layout: {what}", layout.name())));
    }
}

#[test]
fn corrupt_single_tensor_is_rejected_or_exact() {
    let original = realistic_weights(1, 1000, 0.02, 9);
    for layout in [Layout::Warp, Layout::Lanes, Layout::Lanes9] {
        let t = compress_exact(&original, &EncodeOptions { segment_rows: 1, layout });
        assert_eq!(t.num_segments(), 4);
        let clean = t.to_bytes();
        assert!(check_single(&clean, &original, "clean"));
        sweep(&clean, &|b, what| check_single(b, &original, &format!("{} layout: {what}", layout.name())));
    }
}

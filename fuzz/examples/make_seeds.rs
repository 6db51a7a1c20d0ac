//! Writes the seed corpora of the fuzz targets: small valid containers.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds -- fuzz/seeds`
//! writes `<dir>/<target>/<name>` for the container, in-place and round-trip targets;
//! `fuzz/make_file_seeds.py` derives the checkpoint and DFloat11 seeds.

use df11_host::encode::compress_exact;
use df11_host::{CompressedTensor, EncodeOptions, Group, Layout, compress_with};
use std::path::Path;

/// Deterministic bf16-like values: a few exponents around 1.0 with random
/// sign and mantissa, plus an occasional special value.
fn weights(n: usize, seed: u64) -> Vec<u16> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let exp = 120 + (x >> 60) as u16 % 8;
            let sm = (x >> 8) as u16;
            if i % 97 == 13 { [0x7F80, 0xFFC1, 0x0000, 0x8001][i % 4] } else { (sm & 0x807F) | exp << 7 }
        })
        .collect()
}

/// The warp layout (container version 1), which the GPU launcher reads.
fn tensor(n: usize, rows: u32, seed: u64) -> CompressedTensor {
    compress_with(&weights(n, seed), &EncodeOptions { segment_rows: rows, layout: Layout::Warp })
}

/// The same in the lanes layout (container version 2).
fn lanes(n: usize, rows: u32, seed: u64) -> CompressedTensor {
    compress_with(&weights(n, seed), &EncodeOptions { segment_rows: rows, layout: Layout::Lanes })
}

/// The same in the lanes9 layout (container version 3), even where lanes
/// would be smaller (as it is for tensors this small).
fn lanes9(n: usize, rows: u32, seed: u64) -> CompressedTensor {
    compress_exact(&weights(n, seed), &EncodeOptions { segment_rows: rows, layout: Layout::Lanes9 })
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: make_seeds <dir>");
    let dir = Path::new(&dir);
    let singles: Vec<(&str, CompressedTensor)> = vec![
        ("empty", tensor(0, 1, 0)),
        ("one", tensor(1, 1, 1)),
        ("constant", compress_with(&[0x3F80; 37], &EncodeOptions { segment_rows: 1, layout: Layout::Warp })),
        ("odd_7", tensor(7, 1, 2)),
        ("rows1_300", tensor(300, 1, 3)),
        ("rows2_777", tensor(777, 2, 4)),
        ("rows3_1000", tensor(1000, 3, 5)),
        ("lanes_rows2_777", lanes(777, 2, 10)),
        ("lanes_rows1_300", lanes(300, 1, 11)),
        ("lanes9_rows2_777", lanes9(777, 2, 14)),
        ("lanes9_rows1_300", lanes9(300, 1, 15)),
        ("lanes9_odd_13", lanes9(13, 1, 16)),
        ("lanes9_constant", compress_exact(&[0x3FC0; 21], &EncodeOptions { segment_rows: 1, layout: Layout::Lanes9 })),
        // Fewer bytes than elements: one symbol's code takes no bits.
        ("lanes9_ones_4096", compress_exact(&[0x3F80; 4096], &EncodeOptions { layout: Layout::Lanes9, ..Default::default() })),
    ];
    let groups: Vec<(&str, Group)> = vec![
        ("group3", Group { tensors: vec![tensor(13, 1, 6), tensor(260, 1, 7), tensor(5, 2, 8)] }),
        ("group_empty_mix", Group { tensors: vec![tensor(0, 1, 0), tensor(9, 1, 9)] }),
        ("group_none", Group { tensors: vec![] }),
        ("group_layouts", Group { tensors: vec![tensor(40, 1, 12), lanes(300, 1, 13)] }),
        ("group_layouts3", Group { tensors: vec![tensor(40, 1, 17), lanes(300, 1, 18), lanes9(301, 1, 19)] }),
    ];
    let mut containers: Vec<(&str, Vec<u8>)> = singles.iter().map(|(n, t)| (*n, t.to_bytes())).collect();
    containers.extend(groups.iter().map(|(n, g)| (*n, g.to_bytes())));

    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).expect("create seed dir");
        std::fs::write(d.join(name), bytes).expect("write seed");
    };
    for (name, bytes) in &containers {
        write("container_parse", name, bytes);
        write("reference_decode", name, bytes);
        write("fast_decode", name, bytes);
        // gpu_layout: a 7-byte control prefix (launch shape, no tweak).
        let mut with_ctrl = vec![0u8; 7];
        with_ctrl.extend_from_slice(bytes);
        write("gpu_layout", name, &with_ctrl);
    }
    // in_place reads single-tensor containers.
    for (name, t) in &singles {
        write("in_place", name, &t.to_bytes());
    }
    // roundtrip: a byte of segment_rows and layout, then raw little-endian
    // bf16 bits.
    for (name, n, seed, first) in [("w1", 1, 1, 1), ("w300", 300, 2, 2), ("w777", 777, 3, 3), ("w9_500", 500, 4, 0x13)] {
        let mut b = vec![first];
        b.extend(weights(n, seed).iter().flat_map(|w| w.to_le_bytes()));
        write("roundtrip", name, &b);
    }
}

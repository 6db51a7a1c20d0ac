//! The real decode kernel from the embedded PTX against the CPU reference
//! decoder, on fresh random and realistic inputs, with poisoned outputs, from
//! one element to a few hundred MB. Without a CUDA driver or device it reports
//! a skip and passes, unless `DF11_REQUIRE_GPU` is set (see `gpu_common`).
#![cfg(feature = "cuda")]

mod gpu_common;

use df11::gpu::{GpuDecoder, Slicing};
use df11::synth::{SplitMix64, realistic_weights};
use df11::{EncodeOptions, Error, Group, Layout, compress_with, decode_reference};

/// Every layout, each with its own kernel.
const LAYOUTS: [Layout; 3] = [Layout::Lanes, Layout::Warp, Layout::Lanes9];

fn opts(segment_rows: u32, layout: Layout) -> EncodeOptions {
    EncodeOptions { segment_rows, layout }
}

/// A seed that differs between runs, printed so a failure can be replayed.
fn fresh_seed() -> u64 {
    let seed = std::env::var("DF11_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("seed {seed} (set DF11_SEED to replay)");
    seed
}

fn random_bits(n: usize, rng: &mut SplitMix64) -> Vec<u16> {
    (0..n).map(|_| rng.next_u64() as u16).collect()
}

/// [`check_with`] as `upload` loads the group (a lane index where its
/// segments are few), without the index, and (groups of up to 2M elements)
/// in slices of 3 rows.
fn check(dec: &GpuDecoder, group: &Group, what: &str) {
    let small = group.tensors.iter().map(|t| t.num_elements).sum::<u64>() <= 1 << 21;
    let mut slicings = vec![None, Some(Slicing::Off)];
    if small {
        slicings.push(Some(Slicing::Rows(3)));
    }
    for slicing in slicings {
        check_with(dec, group, &format!("{what} {slicing:?}"), slicing);
    }
}

/// Decodes `group` into outputs poisoned with two patterns (an element the
/// kernel skipped cannot match both) and compares with the CPU reference.
fn check_with(dec: &GpuDecoder, group: &Group, what: &str, slicing: Option<Slicing>) {
    let want: Vec<u16> =
        group.tensors.iter().map(|t| decode_reference(t).expect("reference")).collect::<Vec<_>>().concat();
    let mut g = match slicing {
        None => dec.upload(group),
        Some(s) => dec.upload_with(group, s),
    }
    .expect("upload");
    assert_eq!(g.num_elements(), want.len());
    let s = dec.stream().clone();
    for poison in [0xFFFFu16, 0x0001] {
        let mut out = s.clone_htod(&vec![poison; want.len().max(1)]).expect("alloc output");
        dec.decode_checked(&mut g, &mut out, &s).unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = s.clone_dtoh(&out).expect("download");
        if let Some(i) = got[..want.len()].iter().zip(&want).position(|(a, b)| a != b) {
            panic!("{what}: element {i}: GPU {:04x}, CPU {:04x} (poison {poison:04x})", got[i], want[i]);
        }
    }
}

#[test]
fn gpu_matches_cpu_reference() {
    let Some(dec) = gpu_common::decoder() else { return };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let sizes = [1usize, 7, 8, 255, 256, 257, 4_097, 65_537, (1 << 20) + 3, 25_000_001, 150_000_000];
    for (i, &n) in sizes.iter().enumerate() {
        let random = random_bits(n, &mut rng);
        let realistic = realistic_weights(1, n, 0.02, seed ^ i as u64);
        for (kind, bits) in [("random", &random), ("realistic", &realistic)] {
            let rows: &[u32] = if n <= 1 << 21 { &[1, 7, 256] } else { &[256] };
            for &segment_rows in rows {
                for layout in LAYOUTS {
                    let t = compress_with(bits, &opts(segment_rows, layout));
                    let what = format!("{kind} n={n} R={segment_rows} {}", layout.name());
                    check(&dec, &Group { tensors: vec![t] }, &what);
                }
            }
        }
    }
}

#[test]
fn gpu_decodes_groups_with_odd_boundaries() {
    let Some(dec) = gpu_common::decoder() else { return };
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    let parts = [
        realistic_weights(3, 333_333, 0.02, seed),
        Vec::new(),
        random_bits(77, &mut rng),
        vec![0x3F80; 70_001],
        realistic_weights(64, 4096, 0.05, seed ^ 1),
    ];
    for layout in LAYOUTS {
        let tensors = parts.iter().map(|p| compress_with(p, &opts(16, layout))).collect();
        check(&dec, &Group { tensors }, &format!("group of 5, {}", layout.name()));
    }
    // Both kernels writing one output: the layouts alternate.
    let tensors = parts.iter().zip(LAYOUTS.iter().cycle()).map(|(p, &l)| compress_with(p, &opts(16, l))).collect();
    check(&dec, &Group { tensors }, "group of 5, layouts alternating");
}

#[test]
fn gpu_reports_corrupt_streams() {
    let Some(dec) = gpu_common::decoder() else { return };
    let bits = realistic_weights(16, 65_536, 0.02, 5);
    // Warp: segment 2 gets a word too many and 3 one too few. Lanes: lane 4
    // of segment 0 and lane 5 the same.
    for (layout, at, bad) in [(Layout::Warp, 3, [2, 3]), (Layout::Lanes, 5, [0, 0]), (Layout::Lanes9, 5, [0, 0])] {
        let mut t = compress_with(&bits, &opts(4, layout));
        t.stream_offsets[at] += 1;
        let group = Group { tensors: vec![t] };
        for slicing in [Slicing::Off, Slicing::Rows(1)] {
            let mut g = dec.upload_with(&group, slicing).expect("still a consistent layout");
            match dec.decode(&mut g) {
                Err(Error::CorruptStream { segment }) => {
                    assert!(bad.contains(&segment), "{layout:?} {slicing:?}: segment {segment}")
                }
                other => panic!("{layout:?} {slicing:?}: corruption not reported: {:?}", other.map(|v| v.len())),
            }
        }
    }
}

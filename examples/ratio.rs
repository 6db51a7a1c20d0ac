//! Compression ratio of df11 on synthetic bf16 weights, against the 8 + H
//! bound and zstd.
//!
//! `cargo run --release --example ratio [-- warp|lanes]` (default: lanes, the
//! encoder's default layout)
//!
//! Bits/weight count every serialized byte (headers, offsets, padding, CRCs).
//! The gap to the 8 + H bound splits into: `huff`, unlimited Huffman codes
//! over the entropy; `lim12`, what the 12-bit length limit adds; `stream`, the
//! unread tails of lane streams and zero words of the refill rule (warp) or
//! each lane's padding to a whole word (lanes); `meta`,
//! headers, offsets, padding and checksums.
//! zstd-19 runs on the first 4M elements only (it is slow); zstd-3 on everything.
//! Encode speed is single-threaded, from the thread's CPU time where Linux
//! reports it (so that other load on the machine does not distort it).

use df11::encode::huffman;
use df11::format::MAX_CODE_LEN;
use df11::synth::{self, Dist, SynthParams};
use df11::{EncodeOptions, Layout, compress_with, decode_reference, entropy_bits, exponent_histogram};
use std::time::Instant;

const ZSTD19_SAMPLE: usize = 4 << 20;

fn params(scale: f32, dist: Dist, row_log_sigma: f32, outliers: f64, seed: u64) -> SynthParams {
    SynthParams {
        scale,
        dist,
        row_log_sigma,
        outlier_col_frac: outliers,
        outlier_elem_prob: outliers / 100.0,
        outlier_gain: 8.0,
        seed,
    }
}

/// Nanoseconds this thread has run, where Linux reports it.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Seconds `f` takes: thread CPU time if available, else wall time.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let (c0, t0) = (thread_cpu_ns(), Instant::now());
    let r = f();
    let secs = match (c0, thread_cpu_ns()) {
        // The kernel updates a running thread's CPU time coarsely; short runs use wall time.
        (Some(a), Some(b)) if b - a > 20_000_000 => (b - a) as f64 / 1e9,
        _ => t0.elapsed().as_secs_f64(),
    };
    (r, secs)
}

fn zstd_bpw(bits: &[u16], level: i32) -> f64 {
    let bytes: &[u8] = bytemuck::cast_slice(bits);
    let z = zstd::bulk::compress(bytes, level).expect("zstd compresses");
    z.len() as f64 * 8.0 / bits.len() as f64
}

fn main() {
    let layout = match std::env::args().nth(1).as_deref() {
        None | Some("lanes") => Layout::Lanes,
        Some("warp") => Layout::Warp,
        Some(other) => {
            eprintln!("usage: ratio [warp|lanes] (not {other:?})");
            std::process::exit(2);
        }
    };
    let opts = EncodeOptions { layout, ..Default::default() };
    println!("{} layout, R = {} unless stated", layout.name(), opts.segment_rows);
    let cases: Vec<(&str, usize, usize, SynthParams)> = vec![
        ("tiny 4K gauss", 4, 1024, params(0.02, Dist::Gaussian, 0.25, 0.002, 1)),
        ("small 64K laplace", 64, 1024, params(0.02, Dist::Laplace, 0.25, 0.002, 2)),
        ("q_proj 1M gauss s=0.02", 1024, 1024, params(0.02, Dist::Gaussian, 0.25, 0.002, 3)),
        ("up 4M laplace s=0.016", 2048, 2048, params(0.016, Dist::Laplace, 0.25, 0.002, 4)),
        ("down 16M gauss rowvar=0.6", 2048, 8192, params(0.011, Dist::Gaussian, 0.6, 0.01, 5)),
        ("norm-ish 4M gauss s=1.0", 1024, 4096, params(1.0, Dist::Gaussian, 0.05, 0.0, 6)),
        ("embed 64M gauss s=0.03", 16384, 4096, params(0.03, Dist::Gaussian, 0.25, 0.002, 7)),
    ];
    println!(
        "{:<26} {:>9} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6}",
        "tensor", "N", "df11", "8+H", "gap", "huff", "lim12", "stream", "meta", "zstd3", "zstd19", "enc1"
    );
    let pool1 = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("thread pool");
    for (name, rows, cols, p) in &cases {
        let bits = synth::weights_with(*rows, *cols, p);
        let n = bits.len() as f64;
        let hist = exponent_histogram(&bits);
        let h = entropy_bits(&hist);
        let (t, secs) = pool1.install(|| timed(|| compress_with(&bits, &opts)));
        assert_eq!(decode_reference(&t).expect("decodes"), bits, "round trip of {name}");
        let bpw = t.bits_per_weight();
        let limited = huffman::coded_bits(&hist, &huffman::code_lengths(&hist, MAX_CODE_LEN)) as f64;
        let unlimited = huffman::coded_bits(&hist, &huffman::code_lengths(&hist, 64)) as f64;
        let stream_bits = 32.0 * t.words.len() as f64;
        let meta_bits = t.serialized_len() as f64 * 8.0 - stream_bits - 8.0 * n;
        println!(
            "{:<26} {:>9} {:>8.4} {:>8.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.3} {:>7.3} {:>6.2}",
            name,
            bits.len(),
            bpw,
            8.0 + h,
            bpw - 8.0 - h,
            unlimited / n - h,
            (limited - unlimited) / n,
            (stream_bits - limited) / n,
            meta_bits / n,
            zstd_bpw(&bits, 3),
            zstd_bpw(&bits[..bits.len().min(ZSTD19_SAMPLE)], 19),
            n * 2.0 / secs / 1e9,
        );
    }
    println!("(enc1: single-thread encode, GB/s of bf16 input)");

    for case in [2, 4] {
        let (name, rows, cols, p) = &cases[case];
        println!("\nsegment_rows on {name} (bits/weight, gap to 8+H):");
        let bits = synth::weights_with(*rows, *cols, p);
        let bound = 8.0 + entropy_bits(&exponent_histogram(&bits));
        for r in [64u32, 128, 256, 512, 1024, 4096] {
            let t = compress_with(&bits, &EncodeOptions { segment_rows: r, ..opts });
            println!("  R = {r:>5}: {:.4} (gap {:.4})", t.bits_per_weight(), t.bits_per_weight() - bound);
        }
    }

    let (_, rows, cols, p) = &cases[4];
    let bits = synth::weights_with(*rows, *cols, p);
    let t0 = Instant::now();
    let t = compress_with(&bits, &opts);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "\nencode, {} threads, 16M elements: {:.2} GB/s of bf16 input (wall time)",
        rayon::current_num_threads(),
        bits.len() as f64 * 2.0 / secs / 1e9
    );
    let (out, secs) = timed(|| decode_reference(&t).expect("decodes"));
    println!("reference decode, 1 thread: {:.3} GB/s of bf16 output", out.len() as f64 * 2.0 / secs / 1e9);
}

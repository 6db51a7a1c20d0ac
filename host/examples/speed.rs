//! Single-core encode and decode throughput, in bf16 bytes per second of
//! *thread CPU time*, so that other work on a shared machine does not count:
//! `cargo run --release -p df11-host --example speed [MiB] [reps] [lanes|lanes9|warp|id]`
//! (default lanes; `id` prints the warp layout's container CRCs).
//! The all-threads figures are wall time (and so only meaningful on an idle
//! machine); `df11 bench` is the end-to-end measurement.

use df11_host::decode::{self, DecodeOptions};
use std::time::Instant;

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(7);
    let cols = 4096;
    let bits = df11_host::synth::realistic_weights((mib << 19) / cols, cols, 0.02, 1);
    let n = bits.len();
    // `id` stays on the warp layout, so its CRCs compare with those printed
    // before lanes became the default.
    let layout = match args.get(3).map(String::as_str) {
        Some("warp" | "id") => df11_host::Layout::Warp,
        Some("lanes9") => df11_host::Layout::Lanes9,
        _ => df11_host::Layout::Lanes,
    };
    let opts = df11_host::EncodeOptions { layout, ..Default::default() };
    let t = df11_host::compress_with(&bits, &opts);
    // The container's CRC identifies the encoder's exact output across versions.
    let id = crc32c::crc32c(&t.to_bytes());
    println!(
        "{n} realistic bf16 weights, {} layout, {:.4} bits/weight, container crc {id:08x}",
        layout.name(),
        t.bits_per_weight()
    );
    if args.get(3).is_some_and(|a| a == "id") {
        for rows in [1, 3, 256] {
            let small = &bits[..bits.len().min(1_000_003)];
            let t = df11_host::compress_with(small, &df11_host::EncodeOptions { segment_rows: rows, layout });
            println!("R = {rows}: container crc {:08x}", crc32c::crc32c(&t.to_bytes()));
        }
        return;
    }
    let mut out = vec![0u16; n];
    let bytes = (2 * n) as f64;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let report = |name: &str, v: Vec<f64>| {
        let best = v.iter().copied().fold(0.0, f64::max);
        println!("{name:<34} median {:.3} GB/s, best {best:.3} GB/s ({reps} runs)", median(v));
    };
    // One thread, timed by its own CPU clock (on the pool's thread, where it runs).
    let mut cpu = |name: &str, f: &mut (dyn FnMut(&mut [u16]) + Send)| {
        let v = (0..reps)
            .map(|_| {
                pool.install(|| {
                    let c = thread_cpu();
                    f(&mut out);
                    bytes / (thread_cpu() - c) / 1e9
                })
            })
            .collect();
        assert_eq!(out, bits);
        report(name, v);
    };
    let one = DecodeOptions { parallel: false, ..Default::default() };
    let no_crc = DecodeOptions { verify_crc: false, ..one };
    cpu("decode, 1 thread (cpu time)", &mut |o| decode::decode_into(&t, o, &one).unwrap());
    cpu("decode no crc, 1 thread (cpu time)", &mut |o| decode::decode_into(&t, o, &no_crc).unwrap());
    // The encode alone is timed; its output is checked after.
    let enc: Vec<f64> = (0..reps)
        .map(|_| {
            pool.install(|| {
                let c = thread_cpu();
                let e = df11_host::compress_with(&bits, &opts);
                let s = bytes / (thread_cpu() - c) / 1e9;
                assert!(e == t);
                s
            })
        })
        .collect();
    report("encode, 1 thread (cpu time)", enc);
    cpu("memcpy, 1 thread (cpu time)", &mut |o| o.copy_from_slice(&bits));
    let threads = rayon::current_num_threads();
    let mut wall = |name: &str, f: &mut dyn FnMut(&mut [u16])| {
        let v = (0..reps)
            .map(|_| {
                let s = Instant::now();
                f(&mut out);
                bytes / s.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        assert_eq!(out, bits);
        report(name, v);
    };
    wall(&format!("decode, {threads} threads (wall)"), &mut |o| {
        decode::decode_into(&t, o, &DecodeOptions::default()).unwrap()
    });
    wall(&format!("encode, {threads} threads (wall)"), &mut |o| {
        assert!(df11_host::compress_with(&bits, &opts) == t);
        o.copy_from_slice(&bits);
    });
}

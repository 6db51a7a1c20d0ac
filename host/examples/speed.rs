//! Quick decode/encode throughput probe: `cargo run --release -p df11-host --example speed [MiB] [reps]`.
use df11_host::fast;
use std::time::Instant;

/// CPU time of the calling thread: the machine is shared, so wall time
/// measures the neighbours as much as the code.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only into the timespec we pass.
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
    let n = mib << 19;
    let bits = fast::scratch::weights(n, 0.02, 1);
    let t = fast::scratch::encode(&bits, 256);
    let mut out = vec![0u16; n];
    let bytes = (2 * n) as f64;
    let opts = fast::DecodeOptions { verify_crc: false };
    let mut run = |name: &str, f: &mut dyn FnMut(&mut [u16])| {
        let v: Vec<f64> = (0..reps)
            .map(|_| {
                let (s, c) = (Instant::now(), thread_cpu());
                f(&mut out);
                let (wall, cpu) = (s.elapsed().as_secs_f64(), thread_cpu() - c);
                if std::env::var_os("SPEED_CPU_TIME").is_some() { bytes / cpu / 1e9 } else { bytes / wall / 1e9 }
            })
            .collect();
        assert_eq!(out, bits);
        let best = v.iter().copied().fold(0.0, f64::max);
        println!("{name:<28} median {:.3} GB/s, best {best:.3} GB/s of {reps}", median(v));
    };
    run("decode 1 thread", &mut |o| fast::decode_fast_into(&t, o).unwrap());
    run("decode 1 thread, no crc", &mut |o| fast::decode_fast_into_with(&t, o, &opts).unwrap());
    run("decode parallel", &mut |o| fast::decode_parallel_into(&t, o).unwrap());
    run("memcpy", &mut |o| o.copy_from_slice(&bits));
}

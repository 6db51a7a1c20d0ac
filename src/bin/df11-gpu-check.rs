//! Device check for the GPU decoder: correctness against the CPU reference,
//! throughput next to a device-to-device copy, and a compute-sanitizer run.
//!
//! Needs a CUDA driver and device at run time, nothing at build time.
//! `scripts/gpu-check.sh` runs it; see the README's "Device check" section.
//!
//! Usage: `df11-gpu-check [--quick] [OUT_DIR]` (the log directory defaults to
//! `$OUT`, then `./gpu-check-out`), or `df11-gpu-check --sanitize-one` to
//! decode one small group (what compute-sanitizer runs). Without a driver or
//! device it fails: there is nothing to skip to.

use clap::Parser;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaSlice, CudaStream};
use df11::format::DEFAULT_SEGMENT_ROWS;
use df11::gpu::{DeviceGroup, GpuDecoder, Slicing};
use df11::synth::{SplitMix64, realistic_weights};
use df11::{CompressedTensor, EncodeOptions, Group, Layout};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

/// Timed runs per measurement (the median is reported).
const RUNS: usize = 25;
/// Untimed runs first: module load, clocks, caches.
const WARMUP: usize = 3;

/// Uniformly random bit patterns: every exponent, NaNs and all.
fn random_bits(n: usize, rng: &mut SplitMix64) -> Vec<u16> {
    (0..n).map(|_| rng.next_u64() as u16).collect()
}

/// Weights shaped like a trained model's (see `df11::synth`).
fn realistic_bits(n: usize, rng: &mut SplitMix64) -> Vec<u16> {
    realistic_weights(1, n, 0.02, rng.next_u64())
}

/// In exactly `layout`: lanes9 even where lanes would be smaller, so that
/// the small tensors of the checks reach the lanes9 kernel.
fn encode(bits: &[u16], segment_rows: u32, layout: Layout) -> CompressedTensor {
    df11_host::encode::compress_exact(bits, &EncodeOptions { segment_rows, layout })
}

/// Every layout, the default first.
const LAYOUTS: [Layout; 3] = [Layout::Lanes9, Layout::Lanes, Layout::Warp];

struct Check {
    log: String,
    failures: usize,
}

impl Check {
    fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        self.log.push_str(s.as_ref());
        self.log.push('\n');
    }
}

/// Uploads `group` as `slicing` says: `None` as `GpuDecoder::upload` does
/// (a lane index where the segments are too few to fill the GPU).
fn upload(dec: &GpuDecoder, group: &Group, slicing: Option<Slicing>) -> Result<DeviceGroup, String> {
    match slicing {
        None => dec.upload(group),
        Some(s) => dec.upload_with(group, s),
    }
    .map_err(|e| e.to_string())
}

/// What the index did to a group: its slice rows, or "whole" segments.
fn slices_name(g: &DeviceGroup) -> String {
    g.slice_rows().map_or("whole".into(), |k| format!("k={k}"))
}

/// [`check_one`] for each way of uploading the group: as `upload` does, with
/// no index, and (small groups of several-row segments) in slices of one row.
fn check_group(dec: &GpuDecoder, group: &Group, original: &[u16], what: &str, c: &mut Check) {
    let mut slicings = vec![None, Some(Slicing::Off)];
    if original.len() <= 1 << 20 {
        slicings.push(Some(Slicing::Rows(1)));
    }
    for slicing in slicings {
        check_one(dec, group, original, what, slicing, c);
    }
}

/// Decodes `group` on the GPU into outputs poisoned with two different
/// patterns, so an unwritten element cannot match; compares with the CPU
/// reference decoder and with the original bits.
fn check_one(dec: &GpuDecoder, group: &Group, original: &[u16], what: &str, slicing: Option<Slicing>, c: &mut Check) {
    let t0 = Instant::now();
    let want: Vec<u16> = match group.tensors.iter().map(df11::decode_reference).collect::<Result<Vec<_>, _>>() {
        Ok(parts) => parts.concat(),
        Err(e) => {
            c.failures += 1;
            return c.line(format!("FAIL {what}: CPU reference rejected the data: {e}"));
        }
    };
    let result = (|| -> Result<(), String> {
        if want != original {
            return Err("CPU reference differs from the original".into());
        }
        let mut g = upload(dec, group, slicing)?;
        let s = dec.stream().clone();
        for poison in [0xFFFFu16, 0x7FC1] {
            let mut out = s.clone_htod(&vec![poison; want.len().max(1)]).map_err(|e| e.to_string())?;
            dec.decode_checked(&mut g, &mut out, &s).map_err(|e| e.to_string())?;
            let got = s.clone_dtoh(&out).map_err(|e| e.to_string())?;
            if let Some(i) = got[..want.len()].iter().zip(&want).position(|(a, b)| a != b) {
                return Err(format!("element {i}: GPU {:04x}, CPU {:04x} (poison {poison:04x})", got[i], want[i]));
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            c.line(format!("ok   {what} {slicing:?} ({} elements, {:.1} s)", want.len(), t0.elapsed().as_secs_f64()))
        }
        Err(e) => {
            c.failures += 1;
            c.line(format!("FAIL {what} {slicing:?}: {e}"));
        }
    }
}

fn correctness(dec: &GpuDecoder, quick: bool, rng: &mut SplitMix64, c: &mut Check) {
    c.line("== correctness (bit-exact vs CPU reference, poisoned outputs)");
    let mut sizes = vec![1usize, 2, 7, 8, 9, 255, 256, 257, 4095, 65_537, 1 << 20, 10_000_019];
    if !quick {
        sizes.extend([100_000_007, 300_000_001]);
    }
    for &n in &sizes {
        for (kind, bits) in [("random", random_bits(n, rng)), ("realistic", realistic_bits(n, rng))] {
            for rows in [DEFAULT_SEGMENT_ROWS, 256, 1, 7] {
                if rows < 256 && n > 1 << 20 {
                    continue;
                }
                for layout in LAYOUTS {
                    let group = Group { tensors: vec![encode(&bits, rows, layout)] };
                    check_group(dec, &group, &bits, &format!("{kind} n={n} R={rows} {}", layout.name()), c);
                }
            }
        }
    }
    // A group with unaligned tensor boundaries, an empty and a constant tensor.
    let parts: Vec<Vec<u16>> = vec![
        realistic_bits(1_000_003, rng),
        Vec::new(),
        random_bits(77, rng),
        vec![0x3F80; 70_001],
        realistic_bits(4_194_304, rng),
    ];
    for layout in LAYOUTS {
        let group = Group { tensors: parts.iter().map(|p| encode(p, DEFAULT_SEGMENT_ROWS, layout)).collect() };
        check_group(dec, &group, &parts.concat(), &format!("group of 5 (odd lengths) {}", layout.name()), c);
    }
    // Both kernels into one output: the layouts alternate.
    let group = Group {
        tensors: parts.iter().zip(LAYOUTS.iter().cycle()).map(|(p, &l)| encode(p, DEFAULT_SEGMENT_ROWS, l)).collect(),
    };
    check_group(dec, &group, &parts.concat(), "group of 5, layouts alternating", c);
    // Corrupt streams must be reported (or decode to garbage), never crash.
    let bits = realistic_bits(1 << 20, rng);
    for layout in LAYOUTS {
        let mut t = encode(&bits, DEFAULT_SEGMENT_ROWS, layout);
        if t.stream_offsets.len() > 2 {
            t.stream_offsets[1] += 1;
        }
        for slicing in [None, Some(Slicing::Off), Some(Slicing::Rows(1))] {
            let group = Group { tensors: vec![t.clone()] };
            match upload(dec, &group, slicing).and_then(|mut g| dec.decode(&mut g).map_err(|e| e.to_string())) {
                Err(e) => c.line(format!("ok   moved stream boundary rejected ({} {slicing:?}): {e}", layout.name())),
                Ok(_) => {
                    c.failures += 1;
                    c.line(format!(
                        "FAIL moved stream boundary decoded without an error ({} {slicing:?})",
                        layout.name()
                    ));
                }
            }
        }
    }
}

/// Median milliseconds of `f` over [`RUNS`] runs, timed with CUDA events.
fn time_ms(s: &Arc<CudaStream>, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let ctx = s.context();
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    for _ in 0..WARMUP {
        f()?;
    }
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (a, b) =
            (ctx.new_event(flags).map_err(|e| e.to_string())?, ctx.new_event(flags).map_err(|e| e.to_string())?);
        a.record(s).map_err(|e| e.to_string())?;
        f()?;
        b.record(s).map_err(|e| e.to_string())?;
        b.synchronize().map_err(|e| e.to_string())?;
        times.push(f64::from(a.elapsed_ms(&b).map_err(|e| e.to_string())?));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[RUNS / 2])
}

fn bench_one(
    dec: &GpuDecoder,
    name: &str,
    group: &Group,
    slicing: Option<Slicing>,
    c: &mut Check,
) -> Result<(), String> {
    let t0 = Instant::now();
    let mut g: DeviceGroup = upload(dec, group, slicing)?;
    let upload_ms = t0.elapsed().as_secs_f64() * 1e3;
    let name = format!("{name} {}", slices_name(&g));
    let n = g.num_elements();
    let s = dec.stream().clone();
    let mut out: CudaSlice<u16> = s.alloc_zeros(n.max(1)).map_err(|e| e.to_string())?;
    dec.decode_checked(&mut g, &mut out, &s).map_err(|e| e.to_string())?;
    let dec_ms = time_ms(&s, || dec.decode_into(&g, &mut out, &s).map_err(|e| e.to_string()))?;
    let src: CudaSlice<u16> = s.alloc_zeros(n.max(1)).map_err(|e| e.to_string())?;
    let copy_ms = time_ms(&s, || s.memcpy_dtod(&src, &mut out).map_err(|e| e.to_string()))?;
    let out_bytes = 2.0 * n as f64;
    let dec_traffic = g.payload_bytes() as f64 + out_bytes;
    let copy_traffic = 2.0 * out_bytes;
    let gbs = |bytes: f64, ms: f64| bytes / ms / 1e6;
    c.line(format!(
        "{name:<36} {:>8.1} {:>6.3} {:>9.4} {:>9.4} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>6.2} {:>9.1}",
        n as f64 / 1e6,
        g.payload_bytes() as f64 / out_bytes,
        dec_ms,
        copy_ms,
        gbs(out_bytes, dec_ms),
        gbs(out_bytes, copy_ms),
        gbs(dec_traffic, dec_ms),
        gbs(copy_traffic, copy_ms),
        dec_ms / copy_ms,
        upload_ms,
    ));
    Ok(())
}

fn throughput(dec: &GpuDecoder, quick: bool, rng: &mut SplitMix64, c: &mut Check) {
    c.line(format!("== throughput (median of {RUNS} runs after {WARMUP} warm-up, CUDA events)"));
    c.line(
        "case                                 Melems  ratio    dec ms   copy ms  dec GB/s copy GB/s  dec traf copy traf dec/copy upload ms",
    );
    c.line("                                                           (bf16 out) (bf16)  (rd+wr)  (rd+wr)   time  (+index)");
    let mut sizes = vec![1usize << 20, 1 << 22, 1 << 24, 1 << 26];
    if !quick {
        sizes.push(1 << 28);
    }
    // The default (lanes9, R = 1024) against lanes (the same streams of
    // 8-bit exponents: fewer lookups a row, a cheaper join, 0.04-0.05
    // bits/weight larger) and the warp kernel at the old default R and at
    // R = 256, which trades ratio for GPU parallelism (docs/PERFORMANCE.md
    // predicts these; the rows measure them). The lanes layouts as `upload`
    // loads them (a lane index where segments are too few to fill the GPU)
    // and without the index.
    let cases = [
        (Layout::Lanes9, DEFAULT_SEGMENT_ROWS, None),
        (Layout::Lanes9, DEFAULT_SEGMENT_ROWS, Some(Slicing::Off)),
        (Layout::Lanes, DEFAULT_SEGMENT_ROWS, None),
        (Layout::Lanes, DEFAULT_SEGMENT_ROWS, Some(Slicing::Off)),
        (Layout::Warp, DEFAULT_SEGMENT_ROWS, None),
        (Layout::Warp, 256, None),
    ];
    let name =
        |what: &str, (layout, rows, _): (Layout, u32, Option<Slicing>)| format!("{what} {} R={rows}", layout.name());
    for n in sizes {
        let bits = realistic_bits(n, rng);
        for case in cases {
            let group = Group { tensors: vec![encode(&bits, case.1, case.0)] };
            if let Err(e) = bench_one(dec, &name(&format!("realistic {}M", n >> 20), case), &group, case.2, c) {
                c.failures += 1;
                c.line(format!("FAIL throughput {n}: {e}"));
            }
        }
    }
    // Transformer blocks of Llama-3.2-1B and Llama-3.1-8B (q, k, v, o, gate,
    // up, down; grouped-query k and v), the shapes an engine decodes at once.
    for (what, h, kv, f) in [("1B block", 2048usize, 512usize, 8192usize), ("8B block", 4096, 1024, 14336)] {
        let shapes = [h * h, h * kv, h * kv, h * h, h * f, h * f, f * h];
        let shapes: Vec<usize> = if quick { shapes.iter().map(|s| s / 16).collect() } else { shapes.to_vec() };
        let block: Vec<Vec<u16>> = shapes.iter().map(|&n| realistic_bits(n, rng)).collect();
        for case in cases {
            let tensors = block.iter().map(|b| encode(b, case.1, case.0)).collect();
            if let Err(e) = bench_one(dec, &name(what, case), &Group { tensors }, case.2, c) {
                c.failures += 1;
                c.line(format!("FAIL throughput {what}: {e}"));
            }
        }
    }
}

/// Decodes one small group; compute-sanitizer runs this.
fn sanitize_one() -> ExitCode {
    let dec = match df11::gpu::decoder(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rng = SplitMix64::new(1);
    let parts = [realistic_bits(100_003, &mut rng), random_bits(5_000, &mut rng), vec![0x4000; 999]];
    let group = Group { tensors: parts.iter().zip(LAYOUTS.iter().cycle()).map(|(p, &l)| encode(p, 4, l)).collect() };
    match dec.upload(&group).and_then(|mut g| dec.decode(&mut g)) {
        Ok(v) if v == parts.concat() => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("sanitizer run decoded wrong bits");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run_logged(cmd: &mut Command, log: &Path, c: &mut Check) -> bool {
    match cmd.output() {
        Ok(o) => {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            let _ = std::fs::write(log, &text);
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            c.line(format!(
                "  {} -> {} ({})",
                log.display(),
                o.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
            o.status.success()
        }
        Err(e) => {
            c.line(format!("  cannot run: {e}"));
            false
        }
    }
}

fn sanitizers(out: &Path, c: &mut Check) {
    c.line("== compute-sanitizer");
    if Command::new("compute-sanitizer").arg("--version").output().is_err() {
        return c.line("compute-sanitizer not found: skipped");
    }
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("df11-gpu-check"));
    for tool in ["memcheck", "racecheck"] {
        let log = out.join(format!("sanitizer-{tool}.log"));
        let ok = run_logged(
            Command::new("compute-sanitizer")
                .args(["--tool", tool, "--error-exitcode", "3"])
                .arg(&me)
                .arg("--sanitize-one"),
            &log,
            c,
        );
        if !ok {
            c.failures += 1;
            c.line(format!("FAIL compute-sanitizer {tool}"));
        }
    }
}

/// Device check of the GPU decoder: bit-exact against the CPU reference,
/// throughput next to a device-to-device copy, compute-sanitizer.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Smaller inputs: the largest sizes are left out.
    #[arg(long)]
    quick: bool,
    /// Decode one small group and exit (what compute-sanitizer runs).
    #[arg(long, conflicts_with_all = ["quick", "out_dir"])]
    sanitize_one: bool,
    /// Where the logs go [default: $OUT, then ./gpu-check-out].
    out_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.sanitize_one {
        return sanitize_one();
    }
    let quick = args.quick;
    let out = args
        .out_dir
        .or_else(|| std::env::var_os("OUT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("gpu-check-out"));
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let mut c = Check { log: String::new(), failures: 0 };
    match Command::new("nvidia-smi").output() {
        Ok(o) => c.line(String::from_utf8_lossy(&o.stdout).trim_end()),
        Err(e) => c.line(format!("nvidia-smi: {e}")),
    }
    let dec = match df11::gpu::decoder(0) {
        Ok(d) => d,
        Err(e) => {
            c.line(format!("FAIL no GPU decoder: {e}"));
            let _ = std::fs::write(out.join("gpu-check.txt"), &c.log);
            return ExitCode::FAILURE;
        }
    };
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let (geo, lanes) = (dec.geometry(), dec.lanes_geometry());
    let mut head = String::new();
    let _ = write!(
        head,
        "device {}: {} SMs; warp kernel {} blocks/SM of {} threads, {} B shared/block; \
         lanes kernel {} blocks/SM of {} threads, {} B shared/block; seed {seed}",
        dec.device_name(),
        geo.sm_count,
        geo.blocks_per_sm,
        geo.block_threads,
        geo.shared_bytes,
        lanes.blocks_per_sm,
        lanes.block_threads,
        lanes.shared_bytes
    );
    c.line(head);
    let mut rng = SplitMix64::new(seed);
    correctness(&dec, quick, &mut rng, &mut c);
    throughput(&dec, quick, &mut rng, &mut c);
    drop(dec);
    sanitizers(&out, &mut c);
    c.line(if c.failures == 0 { "ALL PASSED".to_string() } else { format!("{} FAILURES", c.failures) });
    let _ = std::fs::write(out.join("gpu-check.txt"), &c.log);
    if c.failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

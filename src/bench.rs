//! `df11 bench`: compression ratio and CPU encode/decode throughput of df11
//! on a bf16 safetensors checkpoint (or synthetic realistic weights), next to
//! the two numbers that put them in context: `memcpy` of the same bytes (the
//! physical limit of any decoder writing them) and, with the `zstd` cargo
//! feature (on by default), zstd level 3.
//!
//! Everything happens in memory; the decoded weights are checked bit-exact
//! against the input before any number is reported.

use rayon::prelude::*;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

/// What to measure and how to report it.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// A bf16 safetensors checkpoint; `None` means synthetic weights.
    pub file: Option<PathBuf>,
    /// Use synthetic realistic weights even if `file` is given.
    pub synthetic: bool,
    /// Worker threads; `None` means one per core.
    pub threads: Option<usize>,
    /// Print one JSON object instead of a table.
    pub json: bool,
    /// The record layout to encode and decode.
    pub layout: df11_host::Layout,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The checkpoint could not be read or is not valid safetensors.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::Error),
    /// The checkpoint holds no bf16 tensor.
    #[error("no bf16 tensors in the checkpoint")]
    NoBf16,
    /// The thread pool could not be built.
    #[error("thread pool: {0}")]
    Pool(String),
    /// Compression or decompression failed.
    #[error("codec: {0}")]
    Codec(String),
    /// A round trip did not reproduce the input (a bug).
    #[error("round trip mismatch in tensor {0}")]
    Mismatch(String),
}

/// Elements of the default synthetic model: 48 Mi bf16 = 96 MiB.
pub const SYNTHETIC_ELEMENTS: usize = 48 << 20;

/// Measurements of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// Where the weights came from.
    pub source: String,
    /// Number of bf16 tensors.
    pub tensors: usize,
    /// Number of bf16 elements.
    pub elements: u64,
    /// Worker threads.
    pub threads: usize,
    /// df11 size, all metadata included, in bits per weight.
    pub bits_per_weight: f64,
    /// Per-tensor entropy bound (exponent entropy + 8 raw bits), element-weighted.
    pub entropy_bound: f64,
    /// Encode throughput, bf16 input bytes per second / 1e9.
    pub encode_gbps: f64,
    /// The record layout measured.
    pub layout: df11_host::Layout,
    /// Decode throughput, bf16 output bytes per second / 1e9, without the
    /// CRC32C of the output (the checks on the stored bytes still run).
    pub decode_gbps: f64,
    /// Decode throughput with the output's CRC32C checked against the stored
    /// one (the library's default).
    pub decode_verified_gbps: f64,
    /// Parallel memcpy of the same bytes / 1e9 per second.
    pub memcpy_gbps: f64,
    /// zstd level 3 size (per tensor) in bits per weight; `None` without
    /// the `zstd` feature.
    pub zstd3_bits_per_weight: Option<f64>,
    /// zstd level 3 decode throughput (tensors decoded in parallel) / 1e9;
    /// `None` without the `zstd` feature.
    pub zstd3_decode_gbps: Option<f64>,
}

/// Runs the benchmark and returns the text to print.
pub fn run(opts: &BenchOptions) -> Result<String, BenchError> {
    run_with(opts, SYNTHETIC_ELEMENTS).map(|r| if opts.json { to_json(&r) } else { to_table(&r) })
}

/// [`run`]'s measurement, with the synthetic model's size chosen by the caller.
pub fn run_with(opts: &BenchOptions, synthetic_elements: usize) -> Result<BenchReport, BenchError> {
    let (source, tensors) = match (&opts.file, opts.synthetic) {
        (Some(path), false) => (path.display().to_string(), load_safetensors(path)?),
        _ => ("synthetic realistic weights".to_owned(), synthetic(synthetic_elements)),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .map_err(|e| BenchError::Pool(e.to_string()))?;
    pool.install(|| measure(source, &tensors, opts.layout))
}

/// Reads every bf16 tensor of a safetensors file (other dtypes are skipped),
/// with the checkpoint reader's strict parser.
fn load_safetensors(path: &std::path::Path) -> Result<Vec<(String, Vec<u16>)>, BenchError> {
    let st = crate::checkpoint::safetensors::SafetensorsFile::open(path)?;
    let mut out: Vec<(String, Vec<u16>)> = st
        .tensors
        .iter()
        .filter(|t| t.dtype == "BF16")
        .map(|t| (t.name.clone(), st.bytes(t).chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()))
        .collect();
    if out.is_empty() {
        return Err(BenchError::NoBf16);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A few tensors shaped like one transformer block's weights (hidden size
/// 4096 scaled down to fit `elements`).
fn synthetic(elements: usize) -> Vec<(String, Vec<u16>)> {
    // Shares of the block: attention q/k/v/o and the gated MLP; scales as in
    // trained models, where wider fan-in means smaller weights.
    let parts: [(&str, usize, f32); 4] =
        [("attn.qkv", 3, 0.02), ("attn.o", 2, 0.015), ("mlp.gate_up", 6, 0.02), ("mlp.down", 3, 0.01)];
    let total: usize = parts.iter().map(|p| p.1).sum();
    let cols = 1024;
    parts
        .iter()
        .enumerate()
        .map(|(i, &(name, share, scale))| {
            let rows = (elements * share / total).div_ceil(cols);
            (name.to_owned(), codec::synth(rows, cols, scale, i as u64 + 1))
        })
        .collect()
}

/// Median of the timings of `reps` runs of `f`, in seconds.
fn time<F: FnMut()>(reps: usize, f: F) -> f64 {
    time_result(reps, f).0
}

/// [`time`] for a function that returns what it made, and that result of the
/// last run: each run's result is dropped after its timer stops, so that no
/// run pays for freeing the one before.
fn time_result<T, F: FnMut() -> T>(reps: usize, mut f: F) -> (f64, T) {
    let mut last = None;
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let r = f();
            let secs = t.elapsed().as_secs_f64();
            last = Some(r);
            secs
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], last.expect("reps > 0"))
}

const REPS: usize = 5;

fn measure(
    source: String,
    tensors: &[(String, Vec<u16>)],
    layout: df11_host::Layout,
) -> Result<BenchReport, BenchError> {
    let elements: u64 = tensors.iter().map(|t| t.1.len() as u64).sum();
    let bytes = 2.0 * elements as f64;
    let gbps = |secs: f64| bytes / secs.max(1e-12) / 1e9;
    let weighted = |f: &dyn Fn(usize) -> f64| {
        let s: f64 = (0..tensors.len()).map(|i| f(i) * tensors[i].1.len() as f64).sum();
        s / (elements.max(1) as f64)
    };

    // df11: encode (tensors in parallel; the encoder parallelises inside too).
    let (encode, compressed): (f64, Vec<_>) =
        time_result(REPS, || tensors.par_iter().map(|t| codec::compress(&t.1, layout)).collect());
    let mut outs: Vec<Vec<u16>> = tensors.iter().map(|t| vec![0u16; t.1.len()]).collect();
    let decode_all = |outs: &mut [Vec<u16>], verify: bool| -> Result<(), BenchError> {
        for (c, o) in compressed.iter().zip(outs.iter_mut()) {
            codec::decompress_into(c, o, verify)?;
        }
        Ok(())
    };
    let check = |outs: &[Vec<u16>]| match tensors.iter().zip(outs).find(|(t, o)| t.1 != **o) {
        Some((t, _)) => Err(BenchError::Mismatch(t.0.clone())),
        None => Ok(()),
    };
    decode_all(&mut outs, true)?;
    check(&outs)?;
    let mut res = Ok(());
    let decode = time(REPS, || res = decode_all(&mut outs, false));
    res?;
    // Unverified runs check nothing themselves: compare what they wrote.
    check(&outs)?;
    let mut res = Ok(());
    let decode_verified = time(REPS, || res = decode_all(&mut outs, true));
    res?;

    // memcpy of the same bytes, split over the same threads.
    let memcpy = time(REPS, || {
        for (t, o) in tensors.iter().zip(outs.iter_mut()) {
            o.par_chunks_mut(1 << 16).zip(t.1.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
        }
    });

    let zstd = zstd3(tensors)?;

    Ok(BenchReport {
        source,
        tensors: tensors.len(),
        elements,
        threads: rayon::current_num_threads(),
        bits_per_weight: weighted(&|i| codec::bits_per_weight(&compressed[i])),
        entropy_bound: weighted(&|i| codec::bound(&tensors[i].1)),
        encode_gbps: gbps(encode),
        layout,
        decode_gbps: gbps(decode),
        decode_verified_gbps: gbps(decode_verified),
        memcpy_gbps: gbps(memcpy),
        zstd3_bits_per_weight: zstd
            .as_ref()
            .map(|(z, _)| weighted(&|i| 8.0 * z[i].len() as f64 / tensors[i].1.len().max(1) as f64)),
        zstd3_decode_gbps: zstd.map(|(_, secs)| gbps(secs)),
    })
}

/// zstd's compressed tensors and median decode time in seconds.
type Zstd3 = Option<(Vec<Vec<u8>>, f64)>;

/// zstd level 3 per tensor, tensors in parallel.
#[cfg(feature = "zstd")]
fn zstd3(tensors: &[(String, Vec<u16>)]) -> Result<Zstd3, BenchError> {
    let raw: Vec<Vec<u8>> = tensors.iter().map(|t| bytemuck::cast_slice(&t.1).to_vec()).collect();
    let z: Vec<Vec<u8>> = raw
        .par_iter()
        .map(|r| zstd::bulk::compress(r, 3))
        .collect::<Result<_, _>>()
        .map_err(|e| BenchError::Codec(format!("zstd: {e}")))?;
    let mut zout: Vec<Vec<u8>> = raw.iter().map(|r| vec![0u8; r.len()]).collect();
    let secs = time(REPS, || {
        zout.par_iter_mut().zip(&z).for_each(|(o, c)| {
            // The size is known, so a failure here is a zstd bug; the check below sees it.
            let _ = zstd::bulk::decompress_to_buffer(c, o);
        })
    });
    if zout != raw {
        return Err(BenchError::Mismatch("zstd".into()));
    }
    Ok(Some((z, secs)))
}

/// Without the `zstd` feature there is no zstd column.
#[cfg(not(feature = "zstd"))]
fn zstd3(_: &[(String, Vec<u16>)]) -> Result<Zstd3, BenchError> {
    Ok(None)
}

/// The report as one JSON object.
pub fn to_json(r: &BenchReport) -> String {
    serde_json::json!({
        "source": r.source,
        "tensors": r.tensors,
        "elements": r.elements,
        "threads": r.threads,
        "layout": r.layout.name(),
        "bits_per_weight": r.bits_per_weight,
        "entropy_bound": r.entropy_bound,
        "encode_gbps": r.encode_gbps,
        "decode_gbps": r.decode_gbps,
        "decode_verified_gbps": r.decode_verified_gbps,
        "memcpy_gbps": r.memcpy_gbps,
        "zstd3_bits_per_weight": r.zstd3_bits_per_weight,
        "zstd3_decode_gbps": r.zstd3_decode_gbps,
    })
    .to_string()
}

/// The report as a text table.
pub fn to_table(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} bf16 tensors, {} elements ({:.1} MB), {} thread{}, {} layout",
        r.source,
        r.tensors,
        r.elements,
        2.0 * r.elements as f64 / 1e6,
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        r.layout.name()
    );
    let zstd = match (r.zstd3_bits_per_weight, r.zstd3_decode_gbps) {
        (Some(b), Some(g)) => Some((b, g)),
        _ => None,
    };
    let _ = writeln!(
        s,
        "| bits/weight | entropy bound | encode GB/s | decode GB/s | decode+CRC GB/s | memcpy GB/s |{}",
        if zstd.is_some() { " zstd-3 bits/weight | zstd-3 decode GB/s |" } else { "" }
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|{}", if zstd.is_some() { "---:|---:|" } else { "" });
    let _ = write!(
        s,
        "| {:.4} | {:.4} | {:.2} | {:.2} | {:.2} | {:.2} |",
        r.bits_per_weight, r.entropy_bound, r.encode_gbps, r.decode_gbps, r.decode_verified_gbps, r.memcpy_gbps,
    );
    if let Some((b, g)) = zstd {
        let _ = write!(s, " {b:.4} | {g:.2} |");
    }
    s.push('\n');
    s
}

/// The df11 calls the benchmark makes, in one place.
mod codec {
    use super::BenchError;
    use df11_host::{CompressedTensor, DecodeOptions, EncodeOptions, Layout, decode, stats, synth};

    pub fn synth(rows: usize, cols: usize, scale: f32, seed: u64) -> Vec<u16> {
        synth::realistic_weights(rows, cols, scale, seed)
    }

    pub fn compress(bits: &[u16], layout: Layout) -> CompressedTensor {
        df11_host::compress_with(bits, &EncodeOptions { layout, ..Default::default() })
    }

    pub fn decompress_into(t: &CompressedTensor, out: &mut [u16], verify_crc: bool) -> Result<(), BenchError> {
        decode::decode_into(t, out, &DecodeOptions { verify_crc, parallel: true })
            .map_err(|e| BenchError::Codec(e.to_string()))
    }

    pub fn bits_per_weight(t: &CompressedTensor) -> f64 {
        t.bits_per_weight()
    }

    pub fn bound(bits: &[u16]) -> f64 {
        stats::bound_bits_per_weight(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_synthetic_json() {
        for layout in [df11_host::Layout::Warp, df11_host::Layout::Lanes, df11_host::Layout::Lanes9] {
            tiny_synthetic_json_for(layout);
        }
    }

    fn tiny_synthetic_json_for(layout: df11_host::Layout) {
        let opts = BenchOptions { file: None, synthetic: true, threads: Some(2), json: true, layout };
        let r = run_with(&opts, 100_000).unwrap();
        let v: serde_json::Value = serde_json::from_str(&to_json(&r)).unwrap();
        let zstd: &[&str] = if cfg!(feature = "zstd") { &["zstd3_bits_per_weight", "zstd3_decode_gbps"] } else { &[] };
        if !cfg!(feature = "zstd") {
            assert!(v["zstd3_bits_per_weight"].is_null() && !to_table(&r).contains("zstd"));
        }
        for &key in [
            "bits_per_weight",
            "entropy_bound",
            "encode_gbps",
            "decode_gbps",
            "decode_verified_gbps",
            "memcpy_gbps",
            "threads",
        ]
        .iter()
        .chain(zstd)
        {
            let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing"));
            assert!(x.is_finite() && x > 0.0, "{key} = {x}");
        }
        assert_eq!(v["threads"], 2);
        assert_eq!(v["layout"], layout.name());
        let (bpw, bound) = (r.bits_per_weight, r.entropy_bound);
        // Lanes9 codes the mantissa's top bit too, so it may go below 8 + H.
        let floor = if layout == df11_host::Layout::Lanes9 { bound - 0.1 } else { bound };
        assert!(bound > 8.0 && bound < 12.0 && bpw >= floor && bpw < bound + 0.5, "{bpw} vs {bound}");
        assert!(to_table(&r).contains("bits/weight"));
    }
}

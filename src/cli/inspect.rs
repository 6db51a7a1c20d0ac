//! `df11 inspect FILE`: what is stored, how small, and how close to the bound.

use super::{Common, human};
use crate::error::{Result, err};
use df11::checkpoint::{BATCH_BYTES, CHECKPOINT_VERSION, Decoder, Kind, Storage, batches};
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

#[derive(Serialize)]
struct Row {
    name: String,
    file: String,
    dtype: String,
    shape: Vec<u64>,
    /// `df11`, `dfloat11` or `raw`.
    storage: &'static str,
    /// For `df11` storage: the record layout, `warp` or `lanes`.
    layout: Option<&'static str>,
    original_bytes: u64,
    stored_bytes: u64,
    /// For BF16 tensors: stored bits per weight.
    bits_per_weight: Option<f64>,
    /// For BF16 tensors: 8 + H(exponent), the bound for coding the exponent alone.
    bound_bits_per_weight: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    path: String,
    kind: &'static str,
    format_version: Option<u32>,
    container_version: Option<u16>,
    tensors: Vec<Row>,
    totals: Totals,
}

#[derive(Serialize, Default)]
struct Totals {
    tensors: usize,
    original_bytes: u64,
    stored_bytes: u64,
    bf16_weights: u64,
    bf16_stored_bytes: u64,
    bits_per_weight: Option<f64>,
    bound_bits_per_weight: Option<f64>,
}

/// Prints the report as a table or (`json`) one JSON object on stdout.
pub fn run(path: &Path, shapes: Option<&Path>, json: bool, dec: &dyn Decoder, common: Common) -> Result<()> {
    let ckpt = super::open(path, shapes, common)?;
    let kind = ckpt.kind().name();
    let mut rows = Vec::new();
    let mut container_version = None;
    let threads = rayon::current_num_threads();
    for f in ckpt.shards() {
        for batch in batches(&f.units, threads, BATCH_BYTES, |i| i.plain_bytes()) {
            let part: Vec<Result<Vec<Row>>> = batch
                .par_iter()
                .map(|unit| {
                    let any_bf16 = unit.outputs.iter().any(|o| o.dtype == "BF16");
                    let plain = if any_bf16 { Some(f.decode_unit(unit, dec)?) } else { None };
                    let mut rows = Vec::new();
                    for (i, e) in f.entries(unit).into_iter().enumerate() {
                        let numel = e.num_elements();
                        let (bpw, bound) = match (&plain, e.dtype.as_str()) {
                            (Some(p), "BF16") if numel > 0 => {
                                let bits: Vec<u16> =
                                    p[i].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                                (
                                    Some(e.stored_bytes as f64 * 8.0 / numel as f64),
                                    Some(df11::stats::bound_bits_per_weight(&bits)),
                                )
                            }
                            _ => (None, None),
                        };
                        let layout = match e.storage {
                            Storage::Df11 { layout } => layout.map(df11::Layout::name),
                            _ => None,
                        };
                        rows.push(Row {
                            name: e.name,
                            file: e.file,
                            dtype: e.dtype,
                            shape: e.shape,
                            storage: e.storage.name(),
                            layout,
                            original_bytes: e.decoded_bytes,
                            stored_bytes: e.stored_bytes,
                            bits_per_weight: bpw,
                            bound_bits_per_weight: bound,
                        });
                    }
                    f.release(unit);
                    Ok(rows)
                })
                .collect();
            for r in part {
                rows.extend(r?);
            }
        }
        if container_version.is_none() {
            container_version = f.units.iter().find_map(|u| f.container_version(u));
        }
    }
    let mut t = Totals { tensors: rows.len(), ..Default::default() };
    let mut bound_sum = 0.0;
    for r in &rows {
        t.original_bytes = t.original_bytes.saturating_add(r.original_bytes);
        t.stored_bytes += r.stored_bytes;
        if let (Some(_), Some(b)) = (r.bits_per_weight, r.bound_bits_per_weight) {
            let n = r.original_bytes / 2;
            t.bf16_weights += n;
            t.bf16_stored_bytes += r.stored_bytes;
            bound_sum += b * n as f64;
        }
    }
    if t.bf16_weights > 0 {
        t.bits_per_weight = Some(t.bf16_stored_bytes as f64 * 8.0 / t.bf16_weights as f64);
        t.bound_bits_per_weight = Some(bound_sum / t.bf16_weights as f64);
    }
    let report = Report {
        path: path.display().to_string(),
        kind,
        format_version: (ckpt.kind() == Kind::Df11).then_some(CHECKPOINT_VERSION),
        container_version,
        tensors: rows,
        totals: t,
    };
    let text =
        if json { serde_json::to_string_pretty(&report).expect("report serializes") + "\n" } else { table(&report) };
    // A closed pipe (`df11 inspect x | head`) is not an error worth reporting.
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(err!("cannot write the report: {e}")),
        _ => Ok(()),
    }
}

fn table(r: &Report) -> String {
    let mut s = String::new();
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    let _ = writeln!(s, "{} ({} checkpoint)", r.path, r.kind);
    if let Some(v) = r.format_version {
        let _ = writeln!(
            s,
            "df11 checkpoint format {v}, container version {}",
            r.container_version.map_or("-".into(), |c| c.to_string())
        );
    }
    let w = r.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        s,
        "{:w$}  {:5}  {:18}  {:12}  {:>10}  {:>10}  {:>7}  {:>7}",
        "name", "dtype", "shape", "storage", "original", "stored", "bits/w", "8+H"
    );
    for t in &r.tensors {
        let storage = match t.layout {
            Some(l) => format!("{} ({l})", t.storage),
            None => t.storage.to_owned(),
        };
        let _ = writeln!(
            s,
            "{:w$}  {:5}  {:18}  {:12}  {:>10}  {:>10}  {:>7}  {:>7}",
            t.name,
            t.dtype,
            format!("{:?}", t.shape),
            storage,
            human(t.original_bytes),
            human(t.stored_bytes),
            opt(t.bits_per_weight),
            opt(t.bound_bits_per_weight)
        );
    }
    let t = &r.totals;
    let _ = writeln!(
        s,
        "total: {} tensors, {} -> {} ({:.1}%); BF16: {} weights at {} bits/weight (bound 8+H: {})",
        t.tensors,
        human(t.original_bytes),
        human(t.stored_bytes),
        100.0 * t.stored_bytes as f64 / t.original_bytes.max(1) as f64,
        t.bf16_weights,
        opt(t.bits_per_weight),
        opt(t.bound_bits_per_weight)
    );
    s
}

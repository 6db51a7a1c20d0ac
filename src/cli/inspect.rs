//! `df11 inspect FILE`: what is stored, how small, and how close to the bound.

use super::load::{CHECKPOINT_VERSION, Kind, Loaded, Payload, batches, materialize};
use super::{BATCH_BYTES, Common, human};
use crate::codec::{self, Decoder};
use crate::error::{Result, err};
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
    let loaded = Loaded::open(path, shapes, &|m| common.warn(m))?;
    let kind = match loaded.kind {
        Kind::Plain => "plain",
        Kind::Df11 => "df11",
        Kind::Dfloat11 => "dfloat11",
    };
    let mut rows = Vec::new();
    let mut container_version = None;
    let threads = rayon::current_num_threads();
    for f in &loaded.files {
        for batch in batches(&f.items, threads, BATCH_BYTES, |i| i.plain_bytes()) {
            let part: Vec<Result<Vec<Row>>> = batch
                .par_iter()
                .map(|item| {
                    let storage = match item.payload {
                        Payload::Raw(_) => "raw",
                        Payload::Df11(_) => "df11",
                        Payload::Dfloat11(_) => "dfloat11",
                    };
                    let layout = match &item.payload {
                        Payload::Df11(t) => codec::container_layout(f.file.bytes(t)).map(df11::Layout::name),
                        _ => None,
                    };
                    let any_bf16 = item.outputs.iter().any(|o| o.dtype == "BF16");
                    let plain = if any_bf16 { Some(materialize(f, item, dec)?) } else { None };
                    let item_plain = item.plain_bytes().max(1);
                    let mut rows = Vec::new();
                    for (i, o) in item.outputs.iter().enumerate() {
                        let numel: u64 = o.shape.iter().product();
                        let original = numel * crate::checkpoint::safetensors::dtype_size(&o.dtype).unwrap_or(1);
                        // A DFloat11 module stores its weights together: share its bytes by size.
                        let stored = match item.payload {
                            Payload::Dfloat11(_) => item.stored_bytes() * original / item_plain,
                            _ => item.stored_bytes(),
                        };
                        let (bpw, bound) = match (&plain, o.dtype.as_str()) {
                            (Some(p), "BF16") if numel > 0 => (
                                Some(stored as f64 * 8.0 / numel as f64),
                                Some(codec::bound_bits_per_weight(&codec::bytes_to_u16(&p[i]))),
                            ),
                            _ => (None, None),
                        };
                        rows.push(Row {
                            name: o.name.clone(),
                            file: f.rel.clone(),
                            dtype: o.dtype.clone(),
                            shape: o.shape.clone(),
                            storage,
                            layout,
                            original_bytes: original,
                            stored_bytes: stored,
                            bits_per_weight: bpw,
                            bound_bits_per_weight: bound,
                        });
                    }
                    super::compress::release(f, item);
                    Ok(rows)
                })
                .collect();
            for r in part {
                rows.extend(r?);
            }
        }
        if container_version.is_none() {
            container_version = f.items.iter().find_map(|i| match &i.payload {
                Payload::Df11(t) => codec::container_version(f.file.bytes(t)),
                _ => None,
            });
        }
    }
    let mut t = Totals { tensors: rows.len(), ..Default::default() };
    let mut bound_sum = 0.0;
    for r in &rows {
        t.original_bytes += r.original_bytes;
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
        format_version: (loaded.kind == Kind::Df11).then_some(CHECKPOINT_VERSION),
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

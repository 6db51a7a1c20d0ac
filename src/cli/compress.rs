//! `df11 compress` and the checkpoint rewriting it shares with `df11 decompress`.

use super::load::{
    CHECKPOINT_VERSION, Df11Meta, Kind, Loaded, LoadedFile, META_KEY, OrigTensor, Payload, batches, materialize,
};
use super::{BATCH_BYTES, Common, human};
use crate::checkpoint::safetensors::{Planned, StreamWriter};
use crate::checkpoint::{Input, OutputDir, OutputFile, check_output, copy_others};
use crate::codec::{self, Decoder};
use crate::error::{IoContext, Result, bail, err};
use df11::EncodeOptions;
use indicatif::ProgressBar;
use rayon::prelude::*;
use std::borrow::Cow;
use std::fs::File;
use std::path::Path;
use std::time::Instant;

/// Sizes a rewrite produced, for the summary line.
#[derive(Default, Debug)]
pub struct Totals {
    /// Bytes of all tensors in plain form.
    pub plain: u64,
    /// Bytes of all tensor data written.
    pub written: u64,
    /// BF16 elements that were compressed (or decompressed).
    pub bf16_elems: u64,
    /// Bytes of the compressed BF16 tensors.
    pub bf16_compressed: u64,
    /// Number of tensors written.
    pub tensors: usize,
}

/// `df11 compress IN -o OUT`.
pub fn run(
    input: &Path,
    output: &Path,
    shapes: Option<&Path>,
    force: bool,
    opts: EncodeOptions,
    common: Common,
) -> Result<()> {
    check_output(output, &[input], force)?;
    let start = Instant::now();
    let loaded = Loaded::open(input, shapes, &|m| common.warn(m))?;
    if loaded.kind == Kind::Df11 {
        bail!("{}: is already a df11 checkpoint", input.display());
    }
    let t = rewrite(&loaded, output, &codec::CpuDecoder, Some(opts), common)?;
    if !common.quiet {
        let secs = start.elapsed().as_secs_f64();
        let bpw = if t.bf16_elems > 0 { t.bf16_compressed as f64 * 8.0 / t.bf16_elems as f64 } else { 16.0 };
        eprintln!(
            "{}: {} tensors, {} -> {} ({:.1}%), BF16 weights at {:.3} bits/weight (ratio {:.3}), {:.1} s, {}/s",
            output.display(),
            t.tensors,
            human(t.plain),
            human(t.written),
            100.0 * t.written as f64 / t.plain.max(1) as f64,
            bpw,
            bpw / 16.0,
            secs,
            human((t.plain as f64 / secs.max(1e-9)) as u64)
        );
    }
    Ok(())
}

/// Writes `loaded` to `output` in plain form (`encode = None`) or with every
/// BF16 tensor compressed with `encode`, atomically, one batch of tensors in
/// memory at a time.
pub fn rewrite(
    loaded: &Loaded,
    output: &Path,
    dec: &dyn Decoder,
    encode: Option<EncodeOptions>,
    common: Common,
) -> Result<Totals> {
    let total: u64 = loaded.items().map(|(_, i)| i.plain_bytes()).sum();
    let bar = common.progress(total);
    let mut totals = Totals::default();
    match &loaded.input {
        Input::File(_) => {
            let out = OutputFile::create(output)?;
            write_file(&loaded.files[0], out.path(), out.file()?, dec, encode, &bar, &mut totals)?;
            out.commit()?;
        }
        Input::Dir(d) => {
            let out = OutputDir::create(output)?;
            let mut weight_map = serde_json::Map::new();
            for f in &loaded.files {
                let path = out.path().join(&f.rel);
                let file = File::create(&path).ctx("cannot create", &path)?;
                write_file(f, &path, file, dec, encode, &bar, &mut totals)?;
                for item in &f.items {
                    for o in &item.outputs {
                        weight_map.insert(o.name.clone(), f.rel.clone().into());
                    }
                }
            }
            let others: Vec<_> = if loaded.kind == Kind::Dfloat11 {
                // The output is no longer a DFloat11 checkpoint: drop its config key.
                let mut cfg = loaded.config.clone().unwrap_or_default();
                if let Some(o) = cfg.as_object_mut() {
                    o.remove("dfloat11_config");
                }
                write_json(&out.path().join("config.json"), &cfg)?;
                d.others.iter().filter(|p| p.as_os_str() != "config.json").cloned().collect()
            } else {
                d.others.clone()
            };
            copy_others(&d.root, out.path(), &others)?;
            if let Some((name, index)) = &d.index {
                let mut index = index.clone();
                // Same shard names and weight map; total_size describes the data bytes stored now.
                // DFloat11 indexes name the module arrays, so theirs is rebuilt from the output.
                if loaded.kind == Kind::Dfloat11 {
                    index["weight_map"] = weight_map.into();
                }
                if !index.get("metadata").is_some_and(|m| m.is_object()) {
                    index["metadata"] = serde_json::json!({});
                }
                index["metadata"]["total_size"] = totals.written.into();
                write_json(&out.path().join(name), &index)?;
            }
            out.commit()?;
        }
    }
    bar.finish_and_clear();
    Ok(totals)
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let mut s = serde_json::to_string_pretty(v).expect("JSON value serializes");
    s.push('\n');
    std::fs::write(path, s).ctx("cannot write", path)
}

fn write_file(
    f: &LoadedFile,
    path: &Path,
    file: File,
    dec: &dyn Decoder,
    encode: Option<EncodeOptions>,
    bar: &ProgressBar,
    totals: &mut Totals,
) -> Result<()> {
    let compress = encode.is_some();
    let outputs = f.items.iter().flat_map(|i| &i.outputs);
    let stored_dtype = |dtype: &str| if compress && dtype == "BF16" { "U8".to_string() } else { dtype.to_string() };
    let planned: Vec<Planned> =
        outputs.clone().map(|o| Planned { name: o.name.clone(), dtype: stored_dtype(&o.dtype) }).collect();
    let dims: Vec<usize> =
        outputs.clone().map(|o| if compress && o.dtype == "BF16" { 1 } else { o.shape.len() }).collect();
    let mut metadata = f.user_metadata.clone();
    if compress {
        let tensors = outputs
            .filter(|o| o.dtype == "BF16")
            .map(|o| (o.name.clone(), OrigTensor { dtype: o.dtype.clone(), shape: o.shape.clone() }))
            .collect();
        let meta = Df11Meta { format_version: CHECKPOINT_VERSION, tensors };
        metadata
            .get_or_insert_default()
            .insert(META_KEY.into(), serde_json::to_string(&meta).expect("metadata serializes"));
    }
    let mut writer = StreamWriter::new(path, file, planned, &dims, metadata)?;
    let threads = rayon::current_num_threads();
    for batch in batches(&f.items, threads, BATCH_BYTES, |i| i.plain_bytes()) {
        // Per output: stored shape, stored bytes, plain byte count, whether it was compressed.
        type Out<'a> = Vec<(Vec<u64>, Cow<'a, [u8]>, u64, bool)>;
        let results: Vec<Result<Out>> = batch
            .par_iter()
            .map(|item| {
                let plain = materialize(f, item, dec)?;
                let mut out = Vec::with_capacity(plain.len());
                for (o, bytes) in item.outputs.iter().zip(plain) {
                    let plain_len = bytes.len() as u64;
                    if let (Some(opts), "BF16") = (&encode, o.dtype.as_str()) {
                        let c = codec::compress(&codec::bytes_to_u16(&bytes), opts);
                        out.push((vec![c.len() as u64], Cow::Owned(c), plain_len, true));
                    } else {
                        out.push((o.shape.clone(), bytes, plain_len, false));
                    }
                }
                bar.inc(item.plain_bytes());
                Ok(out)
            })
            .collect();
        for (item, r) in batch.iter().zip(results) {
            for ((shape, bytes, plain_len, coded), o) in r?.into_iter().zip(&item.outputs) {
                if coded {
                    totals.bf16_elems += plain_len / 2;
                    totals.bf16_compressed += bytes.len() as u64;
                }
                totals.plain += plain_len;
                totals.tensors += 1;
                writer.write(shape, &bytes).map_err(|e| err!("{e} (tensor {})", o.name))?;
            }
            release(f, item);
        }
    }
    totals.written += writer.finish()?;
    Ok(())
}

/// Drops an item's input pages from memory once it is written.
pub fn release(f: &LoadedFile, item: &super::load::Item) {
    match &item.payload {
        Payload::Raw(t) | Payload::Df11(t) => f.file.release(t),
        Payload::Dfloat11(a) => a.iter().for_each(|t| f.file.release(t)),
    }
}

//! Writing checkpoints: a df11 (or plain) safetensors file from any source of
//! named tensors, and rewriting a whole opened checkpoint (compressing or
//! decompressing it) file by file, atomically.
//!
//! Units are processed in batches: up to one per thread and about
//! [`BATCH_BYTES`] of plain bytes each, decoded and encoded in parallel and
//! written in order while the next batch is coded, so memory stays at two
//! batches (a few tensors) however large the checkpoint. Decoded tensors'
//! buffers are reused from batch to batch.

use super::decode::{CpuDecoder, Decoder, bytes_to_u16, pool};
use super::error::{IoContext, Result, tensor_err};
use super::files::Input;
use super::output::{OutputDir, OutputFile, copy_others, write_json};
use super::safetensors::{Metadata, Planned, StreamWriter};
use super::{
    CHECKPOINT_VERSION, Checkpoint, Df11Meta, Kind, META_KEY, OrigTensor, RAW_FALLBACK_MARGIN, Shard, TensorMeta,
};
use crate::EncodeOptions;
use rayon::prelude::*;
use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Budget of plain bytes in flight per batch.
pub const BATCH_BYTES: u64 = 512 << 20;

/// Named tensors to write: declared first (the header records every tensor
/// before the data), produced one at a time.
pub trait TensorSource: Sync {
    /// The tensors, in the order they are written.
    fn tensors(&self) -> Vec<TensorMeta>;
    /// The little-endian bytes of tensor `index` (an index into [`TensorSource::tensors`]).
    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>>;
}

/// A tensor held in memory, the simplest [`TensorSource`] item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedTensor {
    /// Name, dtype and shape.
    pub meta: TensorMeta,
    /// Little-endian bytes.
    pub data: Vec<u8>,
}

impl OwnedTensor {
    /// A tensor from its parts.
    pub fn new(name: impl Into<String>, dtype: impl Into<String>, shape: Vec<u64>, data: Vec<u8>) -> Self {
        OwnedTensor { meta: TensorMeta { name: name.into(), dtype: dtype.into(), shape }, data }
    }
}

impl TensorSource for [OwnedTensor] {
    fn tensors(&self) -> Vec<TensorMeta> {
        self.iter().map(|t| t.meta.clone()).collect()
    }

    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(&self[index].data))
    }
}

impl TensorSource for Vec<OwnedTensor> {
    fn tensors(&self) -> Vec<TensorMeta> {
        self.as_slice().tensors()
    }

    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        self.as_slice().data(index)
    }
}

/// Sizes a write produced.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    /// Bytes of all tensors in plain form.
    pub plain: u64,
    /// Bytes of all tensor data written.
    pub written: u64,
    /// Elements of the BF16 tensors of a df11 output, compressed or stored
    /// raw ([`RAW_FALLBACK_MARGIN`]); 0 for a plain output.
    pub bf16_elems: u64,
    /// Bytes those BF16 tensors were stored in.
    pub bf16_stored: u64,
    /// How many of them were stored raw, because compressing them would not
    /// have saved [`RAW_FALLBACK_MARGIN`] bytes.
    pub bf16_raw: usize,
    /// Number of tensors written.
    pub tensors: usize,
    /// How many other files of a directory (config, tokenizer, and any
    /// weights not in safetensors files) were copied as they were.
    pub others: usize,
    /// Their bytes.
    pub others_bytes: u64,
    /// The largest of them (relative to the directory) and its size.
    pub largest_other: Option<(PathBuf, u64)>,
}

/// How the writer stored a tensor.
enum Stored<'a> {
    /// As given (not BF16, or a plain output).
    Plain,
    /// A df11 container in a U8 vector, written from the tensor's own
    /// vectors (no copy of it in memory).
    Df11(Box<crate::CompressedTensor>),
    /// A BF16 tensor as given, because its container would not have been smaller.
    RawFallback,
    /// A df11 container, decoded as it is written (a plain output), from
    /// the file named.
    Runs(&'a Path),
}

fn no_progress(_: u64) {}

/// How [`Checkpoint::write_to`] writes.
#[derive(Clone, Copy)]
pub struct WriteOptions<'a> {
    /// `Some`: compress every BF16 tensor with these options (a df11
    /// checkpoint); `None`: write every tensor plain.
    pub encode: Option<EncodeOptions>,
    /// Decodes the input's df11 tensors.
    pub decoder: &'a dyn Decoder,
    /// Called with plain bytes done, as units finish (from worker threads).
    pub progress: &'a (dyn Fn(u64) + Sync),
    /// Plain bytes per batch ([`BATCH_BYTES`] by default): memory holds two
    /// batches, or two tensors where one is larger.
    pub batch_bytes: u64,
}

impl Default for WriteOptions<'static> {
    fn default() -> Self {
        WriteOptions { encode: None, decoder: &CpuDecoder, progress: &no_progress, batch_bytes: BATCH_BYTES }
    }
}

/// Writes `source` as one safetensors file at `path`, atomically (a
/// temporary next to it, fsynced, then renamed over `path`). With `encode`,
/// every BF16 tensor is stored df11-compressed (or raw, where that is not at
/// least [`RAW_FALLBACK_MARGIN`] bytes smaller) and recorded in
/// `__metadata__["df11"]`; `metadata` is the file's other metadata.
pub fn write_file<S: TensorSource + ?Sized>(
    path: &Path,
    source: &S,
    encode: Option<EncodeOptions>,
    metadata: Option<Metadata>,
) -> Result<WriteSummary> {
    let metas = source.tensors();
    let units: Vec<std::ops::Range<usize>> = (0..metas.len()).map(|i| i..i + 1).collect();
    let out = OutputFile::create(path)?;
    let mut totals = WriteSummary::default();
    let produce = |u: usize| source.data(units[u].start).map(|d| vec![d]);
    let job = Job {
        path: out.path(),
        metas: &metas,
        units: &units,
        encode,
        metadata,
        header_len: None,
        progress: &no_progress,
        batch_bytes: BATCH_BYTES,
    };
    job.run(out.file()?, &produce, &|_| None, &|_| {}, &mut totals)?;
    out.commit()?;
    Ok(totals)
}

/// One file to write: its tensors, cut into units that are produced together.
struct Job<'j> {
    path: &'j Path,
    metas: &'j [TensorMeta],
    /// Ranges of `metas` each unit produces.
    units: &'j [std::ops::Range<usize>],
    encode: Option<EncodeOptions>,
    metadata: Option<Metadata>,
    /// The original header's length: recorded in a df11 output, the header
    /// padded to it in a plain one ([`Shard::header_len`]).
    header_len: Option<u64>,
    progress: &'j (dyn Fn(u64) + Sync),
    batch_bytes: u64,
}

type Produce<'a, 'j> = dyn Fn(usize) -> Result<Vec<Cow<'a, [u8]>>> + Sync + 'j;

/// For a unit to decode as it is written (its one tensor), the container
/// and the file it is in.
type Stream<'a, 'j> = dyn Fn(usize) -> Option<(&'a [u8], &'a Path)> + Sync + 'j;

impl Job<'_> {
    fn run<'a>(
        self,
        file: File,
        produce: &Produce<'a, '_>,
        stream: &Stream<'a, '_>,
        after: &(dyn Fn(usize) + Sync),
        totals: &mut WriteSummary,
    ) -> Result<()> {
        // Room for the decoded buffers of the two batches in flight.
        let _pool = pool::Scope::new(self.batch_bytes.saturating_mul(2));
        let compress = self.encode.is_some();
        let coded = |m: &TensorMeta| compress && m.dtype == "BF16";
        // Planned as their own dtype: a coded tensor is written as a U8
        // vector of a length not known yet or, if compressing does not pay,
        // as itself. Its header entry gets room for the longer of the two.
        let planned: Vec<Planned> =
            self.metas.iter().map(|m| Planned { name: m.name.clone(), dtype: m.dtype.clone() }).collect();
        let room: Vec<(String, Vec<u64>)> = self
            .metas
            .iter()
            .map(|m| {
                let as_is = (m.dtype.clone(), m.shape.clone());
                if !coded(m) {
                    return as_is;
                }
                let container = ("U8".to_string(), vec![u64::MAX]);
                let len = |(d, s): &(String, Vec<u64>)| {
                    serde_json::to_string(d).map_or(0, |j| j.len()) + serde_json::to_string(s).map_or(0, |j| j.len())
                };
                if len(&as_is) > len(&container) { as_is } else { container }
            })
            .collect();
        let orig = |m: &TensorMeta| (m.name.clone(), OrigTensor { dtype: m.dtype.clone(), shape: m.shape.clone() });
        let df11_meta = |meta: &Df11Meta| serde_json::to_string(meta).expect("metadata serializes");
        let mut metadata = self.metadata;
        let mut meta =
            Df11Meta { format_version: CHECKPOINT_VERSION, header_len: self.header_len, ..Default::default() };
        if compress {
            // Room for the worst case: every coded tensor listed once, and
            // the raw map present. Each entry reads the same in either map,
            // so any split is no longer than this (not even escaped).
            let tensors: std::collections::BTreeMap<_, _> = self.metas.iter().filter(|m| coded(m)).map(orig).collect();
            let raw = tensors.iter().take(1).map(|(k, v)| (k.clone(), v.clone())).collect();
            let worst = Df11Meta { format_version: CHECKPOINT_VERSION, tensors, raw, header_len: self.header_len };
            metadata.get_or_insert_default().insert(META_KEY.into(), df11_meta(&worst));
        }
        let mut writer = StreamWriter::new(self.path, file, planned, &room, metadata.clone())?;
        if let Some(len) = self.header_len.filter(|_| !compress) {
            // A plain output of tensors written as planned: the original's header.
            writer.pad_header_to(len)?;
        }
        let plain_bytes =
            |u: usize| self.metas[self.units[u].clone()].iter().fold(0u64, |a, m| a.saturating_add(m.num_bytes()));
        let all: Vec<usize> = (0..self.units.len()).collect();
        let threads = rayon::current_num_threads();
        // Per output: stored shape, stored bytes, plain byte count, how it was stored.
        type Out<'a> = Vec<(Vec<u64>, Cow<'a, [u8]>, u64, Stored<'a>)>;
        let code_batch = |batch: &[usize]| -> Vec<Result<Out<'a>>> {
            batch
                .par_iter()
                .map(|&u| {
                    let metas = &self.metas[self.units[u].clone()];
                    if let (Some((container, src)), [m]) = (stream(u), metas) {
                        // Decoded by the writer, run by run (`write_runs`).
                        return Ok(vec![(m.shape.clone(), Cow::Borrowed(container), m.num_bytes(), Stored::Runs(src))]);
                    }
                    let plain = produce(u)?;
                    if plain.len() != metas.len() {
                        let name = metas.first().map_or("", |m| m.name.as_str());
                        return Err(tensor_err(self.path, name, "the source gave the wrong number of tensors"));
                    }
                    let mut out = Vec::with_capacity(plain.len());
                    for (m, bytes) in metas.iter().zip(plain) {
                        super::safetensors::check_size(self.path, &m.name, &m.dtype, &m.shape, bytes.len())?;
                        let plain_len = bytes.len() as u64;
                        match &self.encode {
                            Some(opts) if coded(m) => {
                                // Into the vectors of an earlier tensor, where one is free.
                                let n = plain_len as usize / 2;
                                let t = crate::compress_reusing(&bytes_to_u16(&bytes), opts, pool::take_spare(n));
                                let len = t.serialized_len();
                                if len + RAW_FALLBACK_MARGIN <= plain_len {
                                    out.push((vec![len], Cow::Borrowed(&[][..]), plain_len, Stored::Df11(Box::new(t))));
                                } else {
                                    pool::give_spare(t);
                                    out.push((m.shape.clone(), bytes, plain_len, Stored::RawFallback));
                                }
                            }
                            _ => out.push((m.shape.clone(), bytes, plain_len, Stored::Plain)),
                        }
                    }
                    (self.progress)(plain_bytes(u));
                    Ok(out)
                })
                .collect()
        };
        let mut run_bufs: [Vec<u16>; 2] = Default::default();
        let mut write_batch = |batch: &[usize], results: Vec<Result<Out<'a>>>| -> Result<()> {
            for (&u, r) in batch.iter().zip(results) {
                for ((shape, bytes, plain_len, stored), m) in r?.into_iter().zip(&self.metas[self.units[u].clone()]) {
                    match stored {
                        Stored::Df11(t) => {
                            let len = t.serialized_len();
                            totals.bf16_elems += plain_len / 2;
                            totals.bf16_stored += len;
                            let (name, o) = orig(m);
                            meta.tensors.insert(name, o);
                            writer.begin(Some("U8"), shape, len)?;
                            t.write_pieces(|piece| writer.append(piece))?;
                            writer.end()?;
                            pool::give_spare(*t);
                        }
                        Stored::RawFallback => {
                            totals.bf16_elems += plain_len / 2;
                            totals.bf16_stored += bytes.len() as u64;
                            totals.bf16_raw += 1;
                            let (name, o) = orig(m);
                            meta.raw.insert(name, o);
                            writer.write(shape, &bytes)?;
                        }
                        Stored::Plain => writer.write(shape, &bytes)?,
                        Stored::Runs(src) => {
                            write_runs(&mut writer, src, m, shape, &bytes, plain_len, &mut run_bufs)?;
                            (self.progress)(plain_len);
                        }
                    }
                    // Decoded tensors' buffers serve the next ones.
                    if let Cow::Owned(v) = bytes {
                        pool::give(v);
                    }
                    totals.plain += plain_len;
                    totals.tensors += 1;
                }
                after(u);
            }
            Ok(())
        };
        // A pipeline of two stages: while one batch is written (a thread
        // mostly in the kernel, copying into the page cache), the pool codes
        // the next. Two batches are in memory at a time.
        let mut written: Option<(&[usize], Vec<Result<Out<'a>>>)> = None;
        for batch in batches(&all, threads, self.batch_bytes, |&u| plain_bytes(u)) {
            let (results, done) =
                rayon::join(|| code_batch(batch), || written.take().map_or(Ok(()), |(b, r)| write_batch(b, r)));
            done?;
            written = Some((batch, results));
        }
        if let Some((b, r)) = written {
            write_batch(b, r)?;
        }
        if compress {
            metadata.get_or_insert_default().insert(META_KEY.into(), df11_meta(&meta));
            writer.set_metadata(metadata);
        }
        totals.written += writer.finish()?;
        Ok(())
    }
}

/// Plain bytes of the runs a streamed tensor is decoded in: two runs are in
/// memory, one being written while the next is decoded, small enough to
/// stay in the last-level cache for the write's copy.
const RUN_BYTES: usize = 2 << 20;

/// Writes a df11 tensor of the file `path` as it is decoded, a run of
/// segments at a time ([`df11_host::decode::Runs`]): while one run is
/// written, the next is decoded on the rayon pool. A tensor of any size so
/// takes two run buffers (`bufs`, kept for the next tensors) instead of a
/// buffer of its size, and its bytes are written from the cache. The CRCs
/// are checked after the last run; a failure fails the write, whose
/// temporary output is then removed, so no unchecked bytes are ever kept.
fn write_runs(
    writer: &mut StreamWriter,
    path: &Path,
    m: &TensorMeta,
    shape: Vec<u64>,
    container: &[u8],
    plain_len: u64,
    bufs: &mut [Vec<u16>; 2],
) -> Result<()> {
    use super::decode::{elements_err, message, u16_to_bytes};
    let err = |e: df11_host::Error| tensor_err(path, &m.name, message(e));
    let mut runs = df11_host::decode::Runs::new(container, &df11_host::DecodeOptions::default()).map_err(err)?;
    if runs.num_elements().checked_mul(2) != Some(plain_len) {
        return Err(tensor_err(path, &m.name, elements_err(runs.num_elements(), (plain_len / 2) as usize)));
    }
    let seg = runs.segment_elems();
    let run = (RUN_BYTES / 2).div_ceil(seg).max(1) * seg;
    for b in bufs.iter_mut().filter(|b| b.len() < run) {
        b.resize(run, 0);
    }
    writer.begin(None, shape, plain_len)?;
    let [cur, next] = bufs;
    let (mut cur, mut next) = (&mut cur[..run], &mut next[..run]);
    let mut n = runs.next_into(cur).map_err(err)?;
    while n > 0 {
        let done = &cur[..n];
        let (decoded, written) = rayon::join(|| runs.next_into(next), || writer.append(&u16_to_bytes(done)));
        written?;
        n = decoded.map_err(err)?;
        std::mem::swap(&mut cur, &mut next);
    }
    runs.finish().map_err(err)?;
    writer.end()
}

/// Splits items into batches that are processed in parallel and then written
/// in order: at most `threads` items and about `budget` plain bytes per batch
/// (always at least one item), which bounds memory to a few tensors.
pub fn batches<T>(items: &[T], threads: usize, budget: u64, size: impl Fn(&T) -> u64) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let mut end = start + 1;
        let mut bytes = size(&items[start]);
        while end < items.len() && end - start < threads && bytes.saturating_add(size(&items[end])) <= budget {
            bytes = bytes.saturating_add(size(&items[end]));
            end += 1;
        }
        out.push(&items[start..end]);
        start = end;
    }
    out
}

impl Checkpoint {
    /// Writes this checkpoint to `output` in the same form (file or
    /// directory), plain or with every BF16 tensor compressed (see
    /// [`WriteOptions`]), atomically. A directory's other files are copied;
    /// its index keeps its shard names and gets the new `total_size`; a
    /// DFloat11 input loses `dfloat11_config` and gets an index naming weights.
    pub fn write_to(&self, output: &Path, opts: &WriteOptions<'_>) -> Result<WriteSummary> {
        let mut totals = WriteSummary::default();
        match &self.input {
            Input::File(_) => {
                let out = OutputFile::create(output)?;
                let Some(shard) = self.shards.first() else {
                    return Err(super::error::at(&self.path, "no safetensors file"));
                };
                self.write_shard(shard, out.path(), out.file()?, opts, &mut totals)?;
                out.commit()?;
            }
            Input::Dir(d) => {
                let out = OutputDir::create(output)?;
                let mut weight_map = serde_json::Map::new();
                for f in &self.shards {
                    let path = out.path().join(&f.rel);
                    let file = File::create(&path).ctx("cannot create", &path)?;
                    self.write_shard(f, &path, file, opts, &mut totals)?;
                    for unit in &f.units {
                        for o in &unit.outputs {
                            weight_map.insert(o.name.clone(), f.rel.clone().into());
                        }
                    }
                }
                let others: Vec<_> = if self.kind == Kind::Dfloat11 {
                    // The output is no longer a DFloat11 checkpoint: drop its config key.
                    let mut cfg = self.config.clone().unwrap_or_default();
                    if let Some(o) = cfg.as_object_mut() {
                        o.remove("dfloat11_config");
                    }
                    write_json(&out.path().join("config.json"), &cfg)?;
                    d.others.iter().filter(|p| p.as_os_str() != "config.json").cloned().collect()
                } else {
                    d.others.clone()
                };
                (totals.others_bytes, totals.largest_other) = copy_others(&d.root, out.path(), &others)?;
                totals.others = others.len();
                if let Some((name, index)) = &d.index {
                    let mut index = index.clone();
                    // Same shard names and weight map; total_size describes the data bytes stored now.
                    // DFloat11 indexes name the module arrays, so theirs is rebuilt from the output.
                    if self.kind == Kind::Dfloat11 {
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
        Ok(totals)
    }

    fn write_shard(
        &self,
        f: &Shard,
        path: &Path,
        file: File,
        opts: &WriteOptions<'_>,
        totals: &mut WriteSummary,
    ) -> Result<()> {
        let mut metas = Vec::new();
        let mut units = Vec::with_capacity(f.units.len());
        for u in &f.units {
            units.push(metas.len()..metas.len() + u.outputs.len());
            metas.extend(u.outputs.iter().cloned());
        }
        let job = Job {
            path,
            metas: &metas,
            units: &units,
            encode: opts.encode,
            metadata: f.user_metadata.clone(),
            header_len: f.header_len,
            progress: opts.progress,
            batch_bytes: opts.batch_bytes,
        };
        let produce = |u: usize| f.decode_unit(&f.units[u], opts.decoder);
        // A plain output decodes df11 tensors as it writes them, with a
        // decoder that allows it (the CPU's).
        let stream = |u: usize| match &f.units[u].payload {
            super::Payload::Df11(t) if opts.encode.is_none() && opts.decoder.streams() => {
                Some((f.file.bytes(t), f.file.path.as_path()))
            }
            _ => None,
        };
        job.run(file, &produce, &stream, &|u| f.release(&f.units[u]), totals)
    }
}

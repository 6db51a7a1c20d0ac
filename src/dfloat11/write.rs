//! Writing DFloat11 checkpoints: the six arrays of a module
//! ([`encode_module`]) and whole checkpoint directories that DFloat11's own
//! loader reads ([`write_checkpoint`]).
//!
//! The checkpoint side is built on [`crate::checkpoint`]: the input is read
//! through [`Checkpoint::open`] (a plain or df11 checkpoint, a directory or a
//! single `.safetensors` file), shards are written with
//! [`crate::checkpoint::write_file`], and the output directory is built and
//! published atomically by [`OutputDir`] after [`check_output`]'s checks.
//!
//! Encoding a module is parallel inside (histogram, code lengths per chunk of
//! elements, then every chunk writes its own byte range of the bit stream, its
//! own thread windows' gaps and its blocks' output positions), and modules are
//! encoded in parallel too. The layout follows FORMAT.md §4-§7 with
//! 512 threads per block and 8 bytes per thread. Unlike DFloat11's encoder,
//! `output_positions` always has `n_blocks + 1` entries: a block in which no
//! code starts (the last one, when the final code crosses into it) gets `N`,
//! so the kernel never reads past the array (FORMAT.md §8, E2). Padding bits
//! are zero.

use super::code::{Code, FIRST_UNENCODABLE};
use super::patterns::{ModuleSpec, PatternDict};
use super::{ARRAY_NAMES, BLOCK_BITS, BLOCK_BYTES, THREADS_PER_BLOCK};
use crate::checkpoint::error::IoContext;
use crate::checkpoint::output::{OutputDir, check_output, copy_others, write_json};
use crate::checkpoint::{
    BATCH_BYTES, Checkpoint, CpuDecoder, Input, Kind, Shard, TensorMeta, TensorSource, Unit, batches, bytes_to_u16,
    write_file,
};
use df11_gpu::bits;
use rayon::prelude::*;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// `dfloat11_config.version` written into config.json.
pub const DFLOAT11_VERSION: &str = "0.5.0";
/// Elements per encoding chunk (the unit of parallel work inside a module).
const CHUNK: usize = 1 << 20;
const WINDOW_BITS: u64 = 64;

/// Why a module could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// An exponent DFloat11 cannot store (240..=255: |x| >= 2^113, inf, NaN).
    #[error(
        "tensor {tensor}: element {index} has exponent {exponent} (|x| >= 2^113, inf or NaN), which DFloat11 cannot store"
    )]
    Unencodable {
        /// The tensor holding it.
        tensor: String,
        /// Its index inside the tensor.
        index: u64,
        /// The exponent (240..=255).
        exponent: u8,
    },
    /// More elements than DFloat11's u32 positions address.
    #[error("module of {elements} elements: DFloat11 addresses at most 2^32 - 1 per module")]
    TooLarge {
        /// Element count.
        elements: u64,
    },
}

/// One weight of a module: its tensor name (for errors) and bf16 bits.
#[derive(Clone, Copy, Debug)]
pub struct Weight<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Bf16 bit patterns, row-major.
    pub bits: &'a [u16],
}

/// The six arrays of one module, as DFloat11 stores them (FORMAT.md §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedModule {
    /// `luts`: `[R, 256]` U8.
    pub luts: Vec<u8>,
    /// `encoded_exponent`: `[B]` U8.
    pub encoded_exponent: Vec<u8>,
    /// `sign_mantissa`: `[N]` U8.
    pub sign_mantissa: Vec<u8>,
    /// `output_positions`: `n_blocks + 1` little-endian u32, stored as `[4P]` U8.
    pub output_positions: Vec<u8>,
    /// `gaps`: `[320 * n_blocks]` U8.
    pub gaps: Vec<u8>,
    /// `split_positions`: `[W - 1]` I64, as little-endian bytes.
    pub split_positions: Vec<u8>,
}

impl EncodedModule {
    /// The arrays as [`super::ModuleArrays`], for [`super::decode_module`].
    pub fn arrays(&self) -> super::ModuleArrays<'_> {
        super::ModuleArrays {
            luts: &self.luts,
            encoded_exponent: &self.encoded_exponent,
            sign_mantissa: &self.sign_mantissa,
            output_positions: &self.output_positions,
            gaps: &self.gaps,
            split_positions: &self.split_positions,
        }
    }

    /// `(suffix, safetensors dtype, shape, bytes)` of the six arrays, in [`ARRAY_NAMES`] order.
    pub fn tensors(&self) -> [(&'static str, &'static str, Vec<usize>, &[u8]); 6] {
        let [luts, exp, sm, pos, gaps, split] = ARRAY_NAMES;
        [
            (luts, "U8", vec![self.luts.len() / 256, 256], &self.luts[..]),
            (exp, "U8", vec![self.encoded_exponent.len()], &self.encoded_exponent[..]),
            (sm, "U8", vec![self.sign_mantissa.len()], &self.sign_mantissa[..]),
            (pos, "U8", vec![self.output_positions.len()], &self.output_positions[..]),
            (gaps, "U8", vec![self.gaps.len()], &self.gaps[..]),
            (split, "I64", vec![self.split_positions.len() / 8], &self.split_positions[..]),
        ]
    }

    /// Stored bytes of all six arrays.
    pub fn stored_bytes(&self) -> usize {
        self.tensors().iter().map(|t| t.3.len()).sum()
    }
}

/// Encodes the weights of one module (concatenated in the given order) into
/// DFloat11's six arrays. Deterministic whatever the thread count.
pub fn encode_module(weights: &[Weight]) -> Result<EncodedModule, EncodeError> {
    let n: u64 = weights.iter().map(|w| w.bits.len() as u64).sum();
    if n > u32::MAX as u64 {
        return Err(EncodeError::TooLarge { elements: n });
    }
    let mut hist = [0u64; 256];
    for w in weights {
        let h = crate::exponent_histogram(w.bits);
        if let Some(e) = (FIRST_UNENCODABLE as usize..256).find(|&e| h[e] > 0) {
            let index = w.bits.iter().position(|&b| bits::exponent(b) as usize == e).unwrap_or(0) as u64;
            return Err(EncodeError::Unencodable { tensor: w.name.to_string(), index, exponent: e as u8 });
        }
        hist.iter_mut().zip(h).for_each(|(a, b)| *a += b);
    }
    let code = Code::for_histogram(&hist).expect("exponents >= 240 were refused above");
    let mut split = Vec::new();
    let mut acc = 0i64;
    for w in &weights[..weights.len().saturating_sub(1)] {
        acc += w.bits.len() as i64;
        split.extend(acc.to_le_bytes());
    }
    // Chunks of at most CHUNK elements that never straddle two weights.
    let chunks: Vec<&[u16]> = weights.iter().flat_map(|w| w.bits.chunks(CHUNK)).collect();
    let sign_mantissa: Vec<u8> = {
        let mut sm = vec![0u8; n as usize];
        let mut rest = sm.as_mut_slice();
        let mut parts = Vec::with_capacity(chunks.len());
        for c in &chunks {
            let (mine, tail) = rest.split_at_mut(c.len());
            rest = tail;
            parts.push((mine, *c));
        }
        parts.into_par_iter().for_each(|(out, c)| {
            for (o, &b) in out.iter_mut().zip(c) {
                *o = bits::sign_mantissa(b);
            }
        });
        sm
    };
    let len_of = |b: u16| code.lengths()[bits::exponent(b) as usize] as u64;
    let chunk_bits: Vec<u64> = chunks.par_iter().map(|c| c.iter().map(|&b| len_of(b)).sum()).collect();
    let mut starts = Vec::with_capacity(chunks.len() + 1);
    let mut total = 0u64;
    starts.push(0);
    for b in &chunk_bits {
        total += b;
        starts.push(total);
    }
    let stream_len = total.div_ceil(8) as usize;
    let n_blocks = stream_len.div_ceil(BLOCK_BYTES);
    let windows = n_blocks * THREADS_PER_BLOCK;

    // Ownership: chunk i writes stream bytes [starts[i]/8, starts[i+1]/8) (its
    // bits in the byte shared with the next chunk come back as a carry), and
    // the gap of every window whose first code start is one of its codes: the
    // windows after the one holding the previous chunk's last code start, up
    // to the one holding its own last code start.
    let last_start = |i: usize| -> Option<u64> { chunks[i].last().map(|&b| starts[i + 1] - len_of(b)) };
    let after = |p: Option<u64>| p.map_or(0, |p| (p / WINDOW_BITS) as usize + 1);
    let mut first_window = Vec::with_capacity(chunks.len() + 1);
    let mut prev_last: Option<u64> = None;
    for i in 0..chunks.len() {
        first_window.push(after(prev_last));
        prev_last = last_start(i).or(prev_last);
    }
    first_window.push(after(prev_last));
    let mut stream = vec![0u8; stream_len];
    let mut gaps_unpacked = vec![0u8; windows];
    let mut jobs = Vec::with_capacity(chunks.len());
    {
        let mut s_rest = stream.as_mut_slice();
        let mut g_rest = gaps_unpacked.as_mut_slice();
        let (mut s_at, mut g_at) = (0usize, 0usize);
        for i in 0..chunks.len() {
            let s_end = if i + 1 == chunks.len() { stream_len } else { (starts[i + 1] / 8) as usize };
            let (s_mine, s_tail) = s_rest.split_at_mut(s_end - s_at);
            s_rest = s_tail;
            s_at = s_end;
            let (g_mine, g_tail) = g_rest.split_at_mut(first_window[i + 1] - g_at);
            g_rest = g_tail;
            g_at = first_window[i + 1];
            jobs.push((i, s_mine, g_mine));
        }
    }
    let first_index: Vec<u64> = chunks
        .iter()
        .scan(0u64, |acc, c| {
            let i = *acc;
            *acc += c.len() as u64;
            Some(i)
        })
        .collect();
    let results: Vec<(u8, Vec<(usize, u32)>)> = jobs
        .into_par_iter()
        .map(|(i, out, gaps)| {
            encode_chunk(chunks[i], &code, starts[i], first_window[i], first_index[i], i + 1 == chunks.len(), out, gaps)
        })
        .collect();
    let mut positions = vec![n as u32; n_blocks + 1];
    let mut last_block: Option<usize> = None;
    for (i, (carry, blocks)) in results.into_iter().enumerate() {
        if i + 1 < chunks.len() && starts[i + 1] % 8 != 0 {
            stream[(starts[i + 1] / 8) as usize] |= carry;
        }
        for (b, idx) in blocks {
            if last_block.is_none_or(|l| b > l) {
                positions[b] = idx;
                last_block = Some(b);
            }
        }
    }
    if n == 0 {
        positions = vec![0];
    }
    let mut gaps = vec![0u8; windows * 5 / 8];
    gaps.par_chunks_mut(5).zip(gaps_unpacked.par_chunks(8)).for_each(|(out, g)| {
        let v = g.iter().fold(0u64, |a, &x| a << 5 | x as u64);
        out.copy_from_slice(&v.to_be_bytes()[3..]);
    });
    Ok(EncodedModule {
        luts: code.luts().expect("Code::for_histogram builds codes that fit"),
        encoded_exponent: stream,
        sign_mantissa,
        output_positions: positions.iter().flat_map(|p| p.to_le_bytes()).collect(),
        gaps,
        split_positions: split,
    })
}

/// Encodes one chunk starting at stream bit `start` into `out` (which begins at
/// byte `start / 8`), recording window gaps from window `first_window` on and
/// the first element of every block it starts. Returns its bits in the byte
/// it shares with the next chunk, and the block starts.
#[allow(clippy::too_many_arguments)]
fn encode_chunk(
    chunk: &[u16],
    code: &Code,
    start: u64,
    first_window: usize,
    first_index: u64,
    last: bool,
    out: &mut [u8],
    gaps: &mut [u8],
) -> (u8, Vec<(usize, u32)>) {
    let table: Vec<(u64, u32)> = code.codes().iter().zip(code.lengths()).map(|(&c, &l)| (c as u64, l as u32)).collect();
    // `acc` holds `fill` pending bits in its low end; the first `start % 8`
    // belong to the previous chunk and are zero here (ORed in by the caller).
    let mut acc: u64 = 0;
    let mut fill = (start % 8) as u32;
    let mut o = 0usize;
    let mut p = start;
    let mut next_window = first_window as u64;
    let mut next_block =
        (first_window / THREADS_PER_BLOCK) as u64 + u64::from(!first_window.is_multiple_of(THREADS_PER_BLOCK));
    let mut blocks = Vec::new();
    for (k, &b) in chunk.iter().enumerate() {
        let w = p / WINDOW_BITS;
        if w >= next_window {
            gaps[(w - first_window as u64) as usize] = (p % WINDOW_BITS) as u8;
            next_window = w + 1;
        }
        let blk = p / BLOCK_BITS;
        if blk >= next_block {
            blocks.push((blk as usize, (first_index + k as u64) as u32));
            next_block = blk + 1;
        }
        let (c, len) = table[bits::exponent(b) as usize];
        acc = (acc << len) | c;
        fill += len;
        p += len as u64;
        if fill >= 32 {
            out[o..o + 4].copy_from_slice(&((acc >> (fill - 32)) as u32).to_be_bytes());
            o += 4;
            fill -= 32;
        }
    }
    while fill >= 8 {
        out[o] = (acc >> (fill - 8)) as u8;
        o += 1;
        fill -= 8;
    }
    let partial = if fill > 0 { ((acc << (8 - fill)) & 0xFF) as u8 } else { 0 };
    if last && fill > 0 {
        // Zero padding up to the byte boundary.
        out[o] = partial;
        return (0, blocks);
    }
    (partial, blocks)
}

/// What to do with a module whose weights DFloat11 cannot store (exponents 240..=255).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unencodable {
    /// Fail with [`EncodeError::Unencodable`], naming the tensor.
    #[default]
    Error,
    /// Store that module's weights uncompressed under their normal names
    /// (DFloat11's loader then loads them as ordinary parameters).
    KeepUncompressed,
}

/// Settings of [`write_checkpoint`].
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Which modules to compress; `None`: the built-in dict for config.json's model.
    pub pattern_dict: Option<PatternDict>,
    /// Largest shard (bytes of tensor data) before starting a new file; a
    /// module's arrays are never split, and one larger than this gets a shard
    /// of its own.
    pub max_shard_bytes: u64,
    /// Modules with exponents DFloat11 cannot store.
    pub unencodable: Unencodable,
    /// Replace an existing output directory (only once the new one is complete).
    pub force: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { pattern_dict: None, max_shard_bytes: 2 << 30, unencodable: Unencodable::Error, force: false }
    }
}

/// What [`write_checkpoint`] did.
#[derive(Clone, Debug, Default)]
pub struct WriteReport {
    /// Modules stored as DFloat11 arrays.
    pub compressed_modules: usize,
    /// Modules kept uncompressed, with the reason.
    pub kept_modules: Vec<(String, String)>,
    /// Tensors read.
    pub tensors: usize,
    /// Bytes of tensor data read, in plain form (a df11 input's are decoded).
    pub input_bytes: u64,
    /// Bytes of tensor data written.
    pub output_bytes: u64,
    /// BF16 weights (elements) stored in DFloat11 modules.
    pub encoded_elements: u64,
    /// Bytes of those modules' six arrays.
    pub encoded_bytes: u64,
    /// Safetensors files written.
    pub shards: Vec<String>,
}

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The input could not be read or the output written; the error names
    /// the file (and tensor). Also the output checks of
    /// [`check_output`]: it must not be, contain or lie inside the input.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::Error),
    /// The input is not a checkpoint this writer can turn into DFloat11.
    #[error("{0}")]
    Input(String),
    /// No or a bad pattern dict.
    #[error(transparent)]
    Pattern(#[from] super::patterns::PatternError),
    /// A module could not be encoded.
    #[error("module {module}: {source}")]
    Encode {
        /// The module.
        module: String,
        /// The cause.
        source: EncodeError,
    },
    /// The output exists and `force` was not given.
    #[error("{}: already exists", .0.display())]
    Exists(PathBuf),
}

/// Writes `output`, a DFloat11 checkpoint directory, from `input`: a plain
/// bf16 checkpoint (a directory, sharded or not, with its config.json, or a
/// single `.safetensors` file, which has no config and so needs
/// [`WriteOptions::pattern_dict`]) or a df11 one (decoded first).
///
/// Modules selected by the pattern dict are encoded in parallel; every other
/// tensor is copied under its name; the other files of a directory
/// (tokenizer, ...) are copied; config.json gets `dfloat11_config`. The
/// directory is built under a temporary name next to `output`, fsynced and
/// renamed into place, so `output` never holds a partial checkpoint.
pub fn write_checkpoint(input: &Path, output: &Path, opts: &WriteOptions) -> Result<WriteReport, WriteError> {
    if !opts.force && fs::symlink_metadata(output).is_ok() {
        return Err(WriteError::Exists(output.to_path_buf()));
    }
    check_output(output, &[input], opts.force)?;
    let ckpt = Checkpoint::open(input)?;
    if ckpt.kind() == Kind::Dfloat11 {
        return Err(WriteError::Input(format!("{}: already a DFloat11 checkpoint", input.display())));
    }
    let config = match ckpt.config() {
        Some(c) if c.is_object() => c.clone(),
        Some(_) => {
            return Err(WriteError::Input(format!("{}: not a JSON object", input.join("config.json").display())));
        }
        None => json!({}),
    };
    let dict = match &opts.pattern_dict {
        Some(d) => d.clone(),
        None => PatternDict::for_config(&config)?,
    };

    // Plain and df11 checkpoints have one tensor per unit.
    let sources: Vec<(&Shard, &Unit)> = ckpt.units().collect();
    let mut by_name = BTreeMap::new();
    for (i, (_, u)) in sources.iter().enumerate() {
        let [m] = u.outputs.as_slice() else {
            return Err(WriteError::Input(format!("{}: a unit of several tensors", input.display())));
        };
        if by_name.insert(m.name.as_str(), i).is_some() {
            return Err(WriteError::Input(format!("{}: tensor {} appears twice", input.display(), m.name)));
        }
    }
    let meta = |i: usize| -> &TensorMeta { &sources[i].1.outputs[0] };
    let modules = dict.modules(by_name.keys().copied())?;
    let mut module_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (mi, m) in modules.iter().enumerate() {
        for w in &m.weights {
            let t = meta(by_name[w.as_str()]);
            if t.dtype != "BF16" {
                return Err(WriteError::Input(format!(
                    "tensor {w} of module {} is {}, not BF16; DFloat11 only compresses BF16",
                    m.name, t.dtype
                )));
            }
            module_of.insert(w.as_str(), mi);
        }
    }
    // Work items in input order: a module comes at its first weight.
    enum Item<'a> {
        Plain(usize),
        Module(&'a ModuleSpec),
    }
    let mut items = Vec::new();
    let mut emitted = vec![false; modules.len()];
    for i in 0..sources.len() {
        match module_of.get(meta(i).name.as_str()) {
            Some(&mi) if !emitted[mi] => {
                emitted[mi] = true;
                items.push(Item::Module(&modules[mi]));
            }
            Some(_) => {}
            None => items.push(Item::Plain(i)),
        }
    }
    let item_bytes = |item: &Item| match item {
        Item::Plain(i) => meta(*i).num_bytes(),
        Item::Module(m) => m.weights.iter().map(|w| meta(by_name[w.as_str()]).num_bytes()).sum(),
    };
    // A tensor's plain bytes: borrowed from the map, or decoded from df11.
    let data = |i: usize| -> Result<Cow<[u8]>, WriteError> {
        let (shard, unit) = sources[i];
        let mut out = shard.decode_unit(unit, &CpuDecoder)?;
        out.pop().ok_or_else(|| {
            WriteError::Input(format!("{}: tensor {} decodes to nothing", input.display(), meta(i).name))
        })
    };

    let out = OutputDir::create(output)?;
    let mut report = WriteReport {
        tensors: sources.len(),
        input_bytes: (0..sources.len()).map(|i| meta(i).num_bytes()).sum(),
        ..WriteReport::default()
    };
    let mut shard = ShardTensors::default();
    let mut shard_bytes = 0u64;
    let mut shard_files: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let pt = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut flush = |shard: &mut ShardTensors, shard_bytes: &mut u64| -> Result<(), WriteError> {
        if shard.0.is_empty() {
            return Ok(());
        }
        let path = out.path().join(format!("shard-{}.safetensors", shard_files.len()));
        write_file(&path, &*shard, None, Some(pt.clone()))?;
        shard_files.push((path, shard.0.drain(..).map(|t| t.meta.name).collect()));
        *shard_bytes = 0;
        Ok(())
    };
    for batch in batches(&items, rayon::current_num_threads(), BATCH_BYTES, item_bytes) {
        let encoded: Vec<Result<Vec<OutTensor>, WriteError>> = batch
            .par_iter()
            .map(|item| match item {
                Item::Plain(i) => Ok(vec![OutTensor::plain(meta(*i), data(*i)?)]),
                Item::Module(m) => {
                    let srcs: Vec<usize> = m.weights.iter().map(|w| by_name[w.as_str()]).collect();
                    let bytes: Vec<Cow<[u8]>> = srcs.iter().map(|&i| data(i)).collect::<Result<_, _>>()?;
                    let result = if bytes.iter().all(|b| b.is_empty()) {
                        // DFloat11's loader cannot size a kernel launch for no data.
                        Err("it has no elements".to_string())
                    } else {
                        let bits: Vec<Cow<[u16]>> = bytes.iter().map(|b| bytes_to_u16(b)).collect();
                        let weights: Vec<Weight> =
                            srcs.iter().zip(&bits).map(|(&i, b)| Weight { name: &meta(i).name, bits: b }).collect();
                        match encode_module(&weights) {
                            Ok(e) => Ok(e),
                            Err(e @ EncodeError::Unencodable { .. })
                                if opts.unencodable == Unencodable::KeepUncompressed =>
                            {
                                Err(e.to_string())
                            }
                            Err(source) => return Err(WriteError::Encode { module: m.name.clone(), source }),
                        }
                    };
                    Ok(match result {
                        Ok(e) => e
                            .tensors()
                            .into_iter()
                            .map(|(suffix, dtype, shape, data)| OutTensor {
                                meta: TensorMeta {
                                    name: format!("{}.{suffix}", m.name),
                                    dtype: dtype.to_string(),
                                    shape: shape.into_iter().map(|d| d as u64).collect(),
                                },
                                data: Cow::Owned(data.to_vec()),
                                compressed: true,
                                kept: None,
                            })
                            .collect(),
                        Err(reason) => {
                            let mut v: Vec<OutTensor> =
                                srcs.iter().zip(bytes).map(|(&i, b)| OutTensor::plain(meta(i), b)).collect();
                            v[0].kept = Some((m.name.clone(), reason));
                            v
                        }
                    })
                }
            })
            .collect();
        for (item, tensors) in batch.iter().zip(encoded) {
            let tensors = tensors?;
            let len: u64 = tensors.iter().map(|t| t.data.len() as u64).sum();
            if let Item::Module(_) = item
                && tensors[0].compressed
            {
                report.compressed_modules += 1;
                report.encoded_elements += item_bytes(item) / 2;
                report.encoded_bytes += len;
            }
            // A module's arrays stay together in one shard: readers may look
            // for all six in the file that holds its `luts`.
            if shard_bytes > 0 && shard_bytes + len > opts.max_shard_bytes {
                flush(&mut shard, &mut shard_bytes)?;
            }
            shard_bytes += len;
            report.output_bytes += len;
            for mut t in tensors {
                if let Some(k) = t.kept.take() {
                    report.kept_modules.push(k);
                }
                shard.0.push(t);
            }
        }
    }
    flush(&mut shard, &mut shard_bytes)?;

    // Final names: model.safetensors, or HF-style numbered shards with an index.
    let count = shard_files.len();
    let mut weight_map = serde_json::Map::new();
    for (i, (path, names)) in shard_files.iter().enumerate() {
        let name = if count == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", i + 1)
        };
        let dst = out.path().join(&name);
        fs::rename(path, &dst).ctx("cannot rename into", &dst)?;
        for n in names {
            weight_map.insert(n.clone(), Value::from(name.clone()));
        }
        report.shards.push(name);
    }
    if count > 1 {
        let index = json!({"metadata": {"total_size": report.output_bytes}, "weight_map": weight_map});
        write_json(&out.path().join("model.safetensors.index.json"), &index)?;
    }
    let mut config = config;
    config["dfloat11_config"] = json!({
        "version": DFLOAT11_VERSION,
        "threads_per_block": [THREADS_PER_BLOCK],
        "bytes_per_thread": BLOCK_BYTES / THREADS_PER_BLOCK,
        "pattern_dict": dict.to_json(),
    });
    write_json(&out.path().join("config.json"), &config)?;
    if let Input::Dir(d) = ckpt.input() {
        // The input's index describes its own shards; config.json was rewritten above.
        let others: Vec<PathBuf> = d.others.iter().filter(|p| p.as_os_str() != "config.json").cloned().collect();
        copy_others(&d.root, out.path(), &others)?;
    }
    out.commit()?;
    Ok(report)
}

/// One tensor of an output shard.
struct OutTensor<'a> {
    meta: TensorMeta,
    data: Cow<'a, [u8]>,
    compressed: bool,
    /// Set on the first tensor of a module kept uncompressed: (module, reason).
    kept: Option<(String, String)>,
}

impl<'a> OutTensor<'a> {
    fn plain(meta: &TensorMeta, data: Cow<'a, [u8]>) -> Self {
        OutTensor { meta: meta.clone(), data, compressed: false, kept: None }
    }
}

/// The tensors of one output shard, held until the shard is written.
#[derive(Default)]
struct ShardTensors<'a>(Vec<OutTensor<'a>>);

impl TensorSource for ShardTensors<'_> {
    fn tensors(&self) -> Vec<TensorMeta> {
        self.0.iter().map(|t| t.meta.clone()).collect()
    }

    fn data(&self, index: usize) -> crate::checkpoint::Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(&self.0[index].data))
    }
}

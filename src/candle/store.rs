//! Weights for the model: [`BlockStore`] keeps every transformer block
//! compressed and decodes one block at a time into a single reused buffer;
//! [`PlainWeights`] holds every tensor decoded, as candle models usually do.
//! Both implement [`Weights`], which is all the model sees, and both read a
//! [`Checkpoint`] (df11, plain or DFloat11).
//!
//! # The block buffer
//!
//! A block is every tensor named `model.layers.{i}.*` (one of the
//! checkpoint's [`Checkpoint::block_groups`]). Its compressed bf16 tensors
//! are laid back to back in one buffer sized for the largest block;
//! [`Weights::block`] decodes them into it in place (a candle
//! [`InplaceOp1`]: no allocation) and hands out each weight as a view:
//! `buffer.narrow(0, offset, n).reshape(shape)`, which shares the buffer's
//! storage.
//!
//! Two kinds of compressed tensors: df11 containers (decoded one by one with
//! the df11 decoder; on CUDA the whole block in one kernel launch) and the
//! weights of DFloat11 modules (decoded by the checkpoint's unit decoding,
//! each module once, on the CPU). The df11 ones come first in the buffer, in
//! the order of the block's `Group`, which is what one GPU launch writes.
//!
//! On CUDA the buffer is bf16 and the decoder writes it directly. On the CPU
//! it is f32: candle 0.11's CPU matmul has no bf16 kernel and widens *the
//! whole storage* of a bf16 operand to f32 on every call, which for a view
//! into a block buffer means the whole block, seven times per block. So each
//! tensor is decoded as bf16 into the upper half of its own f32 slot and
//! widened in place, once per block decode (no scratch); the model then
//! multiplies in f32, as candle does for bf16 (widening bf16 is exact, so
//! the results keep their bits).
//! What one call allocates is the tensor handles and the name map (a few
//! hundred bytes per weight), never weight data; the test
//! `decoded_blocks_are_views_with_the_original_bits` checks that the weights
//! alias the buffer.
//!
//! The views of block `i` stay valid only until the next `block` call, which
//! overwrites the buffer: the model uses them within the block's forward pass.
//!
//! Tensors of a block that are not compressed (a checkpoint may keep small
//! or non-bf16 tensors raw) and the small tensors outside the blocks (the
//! final norm) are loaded decoded once, at open.
//!
//! # The embedding matrix and `lm_head`
//!
//! In a small model these two are a large share of the weights (a third of
//! Llama-3.2-1B, an eighth of Llama-3.1-8B), so they stay compressed too
//! when they are df11 containers, as DFloat11 keeps them:
//!
//! * [`Weights::embed`] decodes only the rows of the tokens asked for
//!   ([`crate::decode::decode_range_into`]: the one or two segments that
//!   hold each row), on the CPU, whatever the device; a few kilobytes.
//! * [`Weights::lm_head`] decodes the head through the block buffer, in
//!   pieces of whole segments ([`crate::CompressedTensor::segments`], cut at
//!   open) that each hold whole rows and decode like a block weight, CRC
//!   checked. On the CPU a piece is at most a block (or the fewest segments
//!   that hold whole rows), so the buffer stays the size of a block. On
//!   CUDA the head is one piece, uploaded like a block and decoded in one
//!   launch, and the buffer is sized by the larger of the two: cuBLAS picks
//!   its kernel by shape, and a pieced product could round differently from
//!   the bf16 model's.
//! * Tied embeddings (no `lm_head.weight`) use the embedding matrix for both.
//!
//! Stored any other way (raw, or a DFloat11 module, whose streams have no
//! row-addressable entry points), they are loaded decoded at open.
//!
//! # Memory accounting
//!
//! [`WeightBytes::compressed`] counts the compressed bytes held for the
//! blocks: df11 containers are parsed into owned memory at open; DFloat11
//! modules are read from the memory-mapped file at every decode, so their
//! pages stay resident too and their stored bytes are counted the same way.

use super::backend::TensorMap;
use super::source::{dtype_shape, load_tensor};
use super::{Error, Result};
use crate::Group;
use crate::checkpoint::{Checkpoint, Storage, TensorGroup};
use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Tensor};
use candle_nn::VarBuilder;
use half::bf16;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
#[cfg(feature = "candle-cuda")]
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The stack of transformer blocks the model runs (see [`crate::checkpoint::groups`]).
const BLOCK_STACK: &str = "model.layers";
/// The embedding matrix, `[vocabulary, hidden]`.
pub(super) const EMBED: &str = "model.embed_tokens.weight";
/// The output projection, the embedding matrix's shape; absent when tied.
pub(super) const LM_HEAD: &str = "lm_head.weight";

/// Weight memory, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WeightBytes {
    /// Compressed block weights held in memory (df11 containers, DFloat11 modules).
    pub compressed: u64,
    /// The reused block buffer (on the CPU with its bf16 scratch).
    pub block_buffer: u64,
    /// Weights held decoded: non-block tensors and uncompressed block tensors.
    pub plain: u64,
    /// Every weight decoded (what a bf16 model holds).
    pub decoded: u64,
}

impl WeightBytes {
    /// Bytes resident at any time: compressed + block buffer + plain.
    pub fn resident(&self) -> u64 {
        self.compressed + self.block_buffer + self.plain
    }
}

/// What the model reads its weights from.
pub trait Weights {
    /// Number of transformer blocks.
    fn num_blocks(&self) -> usize;
    /// Weights outside the blocks, by full name (`model.embed_tokens.weight`).
    fn globals(&self) -> &VarBuilder<'static>;
    /// Block `i`'s weights, by name within the block (`mlp.up_proj.weight`).
    /// The tensors may be views that the next call overwrites.
    fn block(&mut self, i: usize) -> Result<VarBuilder<'static>>;
    /// `(vocabulary, hidden)`: the shape of the embedding matrix, which
    /// `lm_head` shares.
    fn vocab_hidden(&self) -> (usize, usize);
    /// Rows `ids` of the embedding matrix, `[ids.len(), hidden]` bf16 on the
    /// weights' device. The caller checks that every id is below the vocabulary.
    fn embed(&mut self, ids: &[u32]) -> Result<Tensor>;
    /// `x · lm_headᵀ` for bf16 `x` of shape `[n, hidden]`: `[n, vocabulary]`
    /// bf16, with the bits candle's matmul of two bf16 tensors gives.
    fn lm_head(&mut self, x: &Tensor) -> Result<Tensor>;
    /// Weight memory.
    fn bytes(&self) -> WeightBytes;
    /// Time spent decoding blocks so far, and the number of block decodes.
    fn decode_time(&self) -> (Duration, u64) {
        (Duration::ZERO, 0)
    }
}

/// The block number of a tensor of the model's block stack.
fn model_block(group: &TensorGroup) -> Option<usize> {
    let b = group.block.as_ref()?;
    if b.stack != BLOCK_STACK {
        return None;
    }
    usize::try_from(b.index).ok()
}

/// Every tensor of a checkpoint decoded and held as an ordinary tensor: the
/// baseline a bf16 model is.
pub struct PlainWeights {
    vb: VarBuilder<'static>,
    embed: Tensor,
    lm_head: Tensor,
    bytes: WeightBytes,
    num_blocks: usize,
}

/// The embedding matrix and `lm_head` (the embedding matrix when the
/// checkpoint has none, as with tied embeddings: Hugging Face's loaders read
/// it so too), as decoded tensors from `map`.
fn plain_head(map: &HashMap<String, Tensor>) -> Result<(Tensor, Tensor)> {
    let embed = map.get(EMBED).ok_or_else(|| Error::Format(format!("the checkpoint has no {EMBED}")))?.clone();
    let head = map.get(LM_HEAD).unwrap_or(&embed).clone();
    if embed.rank() != 2 || head.dims() != embed.dims() {
        return Err(Error::Format(format!(
            "{EMBED} {:?} and {LM_HEAD} {:?} must be matrices of one shape",
            embed.dims(),
            head.dims()
        )));
    }
    Ok((embed, head))
}

/// Rows `ids` of a decoded embedding matrix, bf16.
fn plain_rows(embed: &Tensor, ids: &[u32]) -> Result<Tensor> {
    let ids = Tensor::new(ids, embed.device())?;
    Ok(embed.index_select(&ids, 0)?.to_dtype(DType::BF16)?)
}

/// `x · headᵀ` for a decoded bf16 head.
fn plain_logits(head: &Tensor, x: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&head.to_dtype(DType::BF16)?.t()?)?)
}

impl PlainWeights {
    /// Loads every tensor of `ckpt` on `device`.
    pub fn load(ckpt: &Checkpoint, device: &Device) -> Result<Self> {
        let mut map = HashMap::new();
        let mut bytes = 0u64;
        for t in ckpt.tensors() {
            map.insert(t.name.clone(), load_tensor(ckpt, &t.name, device)?);
            bytes += t.decoded_bytes;
        }
        let num_blocks = ckpt.block_groups().blocks.iter().filter_map(model_block).map(|i| i + 1).max().unwrap_or(0);
        let (embed, lm_head) = plain_head(&map)?;
        let vb = TensorMap(map).into_var_builder(DType::BF16, device);
        let bytes = WeightBytes { plain: bytes, decoded: bytes, ..Default::default() };
        Ok(PlainWeights { vb, embed, lm_head, bytes, num_blocks })
    }
}

impl Weights for PlainWeights {
    fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    fn globals(&self) -> &VarBuilder<'static> {
        &self.vb
    }

    fn block(&mut self, i: usize) -> Result<VarBuilder<'static>> {
        Ok(self.vb.pp(format!("{BLOCK_STACK}.{i}")))
    }

    fn vocab_hidden(&self) -> (usize, usize) {
        self.embed.dims2().unwrap_or_default()
    }

    fn embed(&mut self, ids: &[u32]) -> Result<Tensor> {
        plain_rows(&self.embed, ids)
    }

    fn lm_head(&mut self, x: &Tensor) -> Result<Tensor> {
        plain_logits(&self.lm_head, x)
    }

    fn bytes(&self) -> WeightBytes {
        self.bytes
    }
}

/// A compressed tensor's place in the block buffer.
struct Slot {
    /// Name within the block.
    name: String,
    shape: Vec<usize>,
    /// Offset in elements.
    offset: usize,
    numel: usize,
}

/// One transformer block: its compressed tensors and where they go.
pub(super) struct Block {
    /// df11 slots (in `group` order, from offset 0), then DFloat11 slots.
    slots: Vec<Slot>,
    /// The df11 containers of the first `group.tensors.len()` slots (on
    /// CUDA: uploaded, and the host copy dropped).
    pub(super) group: Group,
    /// Number of df11 slots.
    pub(super) df11_slots: usize,
    /// The DFloat11 weights, decoded together after the df11 ones (element
    /// offset `dfloat11_offset`), or `None`.
    pub(super) dfloat11: Option<TensorGroup>,
    pub(super) dfloat11_offset: usize,
    #[cfg(feature = "candle-cuda")]
    pub(super) device_group: Option<crate::gpu::DeviceGroup>,
    /// Uncompressed tensors of the block, loaded once (names within the block).
    resident: HashMap<String, Tensor>,
}

impl Block {
    /// A block of one df11 tensor at offset 0.
    fn single(name: &str, shape: Vec<usize>, t: crate::CompressedTensor) -> Self {
        Block {
            slots: vec![Slot { name: name.into(), numel: shape.iter().product(), shape, offset: 0 }],
            group: Group { tensors: vec![t] },
            df11_slots: 1,
            dfloat11: None,
            dfloat11_offset: 0,
            #[cfg(feature = "candle-cuda")]
            device_group: None,
            resident: HashMap::new(),
        }
    }

    fn elements(&self) -> usize {
        self.slots.last().map_or(0, |s| s.offset + s.numel)
    }
}

/// The embedding matrix or `lm_head`, `[rows, cols]`.
struct Matrix {
    name: &'static str,
    rows: usize,
    cols: usize,
    stored: Stored,
}

enum Stored {
    /// Decoded at open, bf16 on the device.
    Plain(Tensor),
    /// A df11 container cut into pieces of `rows_per` rows, each whole
    /// segments ([`crate::CompressedTensor::segments`]) and each a one-tensor
    /// block that decodes into the block buffer. The host copies serve the
    /// embedding rows; on CUDA the head's pieces are uploaded (and an untied
    /// head's host copies dropped).
    Pieces { rows_per: usize, pieces: Vec<Block> },
}

/// Every block kept compressed, decoded one at a time into one reused buffer.
pub struct BlockStore {
    ckpt: Arc<Checkpoint>,
    device: Device,
    globals: VarBuilder<'static>,
    blocks: Vec<Block>,
    embed: Matrix,
    /// `None`: tied, the embedding matrix is the head.
    head: Option<Matrix>,
    /// The block buffer, `[largest block's compressed elements]`: f32 on
    /// the CPU, bf16 on CUDA.
    buffer: Tensor,
    /// CUDA: the bf16 bits of a block's DFloat11 weights, decoded on the
    /// CPU and copied to the buffer (the CPU decodes in place).
    #[cfg(feature = "candle-cuda")]
    scratch: Mutex<Vec<u16>>,
    bytes: WeightBytes,
    decode_time: Duration,
    decodes: u64,
    #[cfg(feature = "candle-cuda")]
    gpu: Option<crate::gpu::GpuDecoder>,
}

/// `buf[at..at + n]`, or an error.
fn region(buf: &mut [f32], at: usize, n: usize) -> candle_core::Result<&mut [f32]> {
    buf.get_mut(at..at.saturating_add(n)).ok_or_else(|| candle_core::Error::msg("df11 block buffer too small"))
}

/// Decodes `out.len()` bf16 values with `decode` and leaves them widened to
/// f32 in `out`, without a scratch buffer: the bf16 bits are decoded into the
/// upper half of `out`'s bytes and widened front to back. Writing f32 `i`
/// touches bytes up to `4i + 4`, and the bf16 values still to be read start
/// at byte `2n + 2(i + 1) >= 4i + 4`, so nothing is overwritten before it
/// is read.
fn decode_widened(
    out: &mut [f32],
    decode: impl FnOnce(&mut [u16]) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    let n = out.len();
    let halves: &mut [u16] = bytemuck::cast_slice_mut(out);
    decode(&mut halves[n..])?;
    for i in 0..n {
        let wide = f32::from(bf16::from_bits(halves[n + i])).to_bits();
        // The f32's two halves in memory order, whatever the host's endianness.
        let [a, b]: [u16; 2] = bytemuck::cast(wide);
        halves[2 * i] = a;
        halves[2 * i + 1] = b;
    }
    Ok(())
}

/// Decodes a block's compressed tensors into the buffer, in place.
pub(super) struct DecodeInto<'a> {
    pub(super) ckpt: &'a Checkpoint,
    pub(super) block: &'a Block,
    #[cfg(feature = "candle-cuda")]
    pub(super) scratch: &'a Mutex<Vec<u16>>,
    #[cfg(feature = "candle-cuda")]
    pub(super) gpu: Option<&'a crate::gpu::GpuDecoder>,
}

impl InplaceOp1 for DecodeInto<'_> {
    fn name(&self) -> &'static str {
        "df11-decode-block"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(buf) = storage else {
            candle_core::bail!("df11 block buffer is not f32");
        };
        let buf = &mut buf[layout.start_offset()..];
        let b = self.block;
        for (slot, t) in b.slots.iter().zip(&b.group.tensors) {
            decode_widened(region(buf, slot.offset, slot.numel)?, |bits| {
                crate::decompress_into(t, bytemuck::cast_slice_mut(bits))
                    .map_err(|e| candle_core::Error::msg(format!("{}: {e}", slot.name)))
            })?;
        }
        if let Some(g) = &b.dfloat11 {
            let n = usize::try_from(g.elements).map_err(candle_core::Error::msg)?;
            decode_widened(region(buf, b.dfloat11_offset, n)?, |bits| {
                self.ckpt.decode_group_into(g, bytemuck::cast_slice_mut(bits)).map_err(candle_core::Error::msg)?;
                // Little-endian bytes: on a big-endian host each element needs a swap.
                if cfg!(target_endian = "big") {
                    bits.iter_mut().for_each(|b| *b = b.swap_bytes());
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(&self, storage: &mut candle_core::CudaStorage, layout: &Layout) -> candle_core::Result<()> {
        super::cuda::decode_into(self, storage, layout)
    }
}

/// A matrix outside the blocks, kept compressed in pieces of at most
/// `budget` elements (or the fewest whole segments that hold whole rows)
/// when it is a df11 bf16 matrix, else decoded (taken from `plain`).
fn matrix(
    ckpt: &Checkpoint,
    name: &'static str,
    plain: &HashMap<String, Tensor>,
    budget: usize,
) -> Result<Option<Matrix>> {
    let Some(entry) = ckpt.tensor(name) else { return Ok(None) };
    let (_, shape) = dtype_shape(&entry)?;
    let &[rows, cols] = shape.as_slice() else {
        return Err(Error::Format(format!("{name}: shape {shape:?} is not a matrix")));
    };
    if rows == 0 || cols == 0 {
        return Err(Error::Format(format!("{name}: shape {shape:?} is empty")));
    }
    let stored = if is_df11_bf16(&entry) {
        let t = ckpt.compressed_group(&[name])?.tensors.pop();
        let t = t.ok_or_else(|| Error::Format(format!("{name}: no container")))?;
        let bad = |e: crate::Error| Error::Format(format!("{name}: {e}"));
        t.validate().map_err(bad)?;
        // k·seg elements hold whole rows when k is a multiple of `unit`.
        let seg = t.segment_elems() as usize;
        let unit = cols / gcd(seg, cols);
        let k = unit * (budget / (unit * seg)).max(1);
        let rows_per = k * seg / cols;
        let segments = t.num_segments();
        let mut pieces = Vec::new();
        for first in (0..segments).step_by(k) {
            let piece = t.segments(first, (k as u64).min(segments - first)).map_err(bad)?;
            let n = piece.num_elements as usize;
            pieces.push(Block::single(name, vec![n / cols, cols], piece));
        }
        Stored::Pieces { rows_per, pieces }
    } else {
        let t = plain.get(name).ok_or_else(|| Error::Format(format!("{name} was not loaded")))?;
        Stored::Plain(t.to_dtype(DType::BF16)?)
    };
    Ok(Some(Matrix { name, rows, cols, stored }))
}

/// A bf16 tensor stored as a df11 container: one that [`matrix`] keeps
/// compressed (when it is a matrix; any other shape is an error there).
fn is_df11_bf16(t: &crate::checkpoint::TensorEntry) -> bool {
    matches!(t.storage, Storage::Df11 { .. }) && t.dtype == "BF16"
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl BlockStore {
    /// Reads `ckpt`: block tensors that are compressed (df11 containers or
    /// DFloat11 modules, bf16) stay compressed (df11 ones on CUDA uploaded
    /// once); everything else is loaded decoded on `device`.
    pub fn load(ckpt: Arc<Checkpoint>, device: &Device) -> Result<Self> {
        let mut globals = HashMap::new();
        let mut blocks: Vec<Block> = Vec::new();
        let mut bytes = WeightBytes::default();
        let groups = ckpt.block_groups();
        let n_groups = groups.iter().count();
        for g in groups.iter() {
            let Some(i) = model_block(g) else {
                for m in &g.members {
                    let df11 = ckpt.tensor(&m.name).is_some_and(|t| is_df11_bf16(&t));
                    if df11 && (m.name == EMBED || m.name == LM_HEAD) {
                        continue; // kept compressed, see `matrix`
                    }
                    globals.insert(m.name.clone(), load_tensor(&ckpt, &m.name, device)?);
                    bytes.plain += m.bytes;
                    bytes.decoded += m.bytes;
                }
                continue;
            };
            // Every block is a group, so a larger index is a bogus name (and
            // must not size an allocation).
            if i >= n_groups {
                return Err(Error::Format(format!("{BLOCK_STACK}.{i}: block index {i} is implausible")));
            }
            while blocks.len() <= i {
                blocks.push(Block {
                    slots: vec![],
                    group: Group::default(),
                    df11_slots: 0,
                    dfloat11: None,
                    dfloat11_offset: 0,
                    #[cfg(feature = "candle-cuda")]
                    device_group: None,
                    resident: HashMap::new(),
                });
            }
            let prefix = format!("{BLOCK_STACK}.{i}.");
            let b = &mut blocks[i];
            let mut df11 = Vec::new();
            let mut dfloat11 = Vec::new();
            for m in &g.members {
                let t = ckpt.tensor(&m.name).ok_or_else(|| Error::Format(format!("no tensor {}", m.name)))?;
                bytes.decoded += t.decoded_bytes;
                let rel = m.name.strip_prefix(&prefix).unwrap_or(&m.name).to_string();
                match (&t.storage, t.dtype.as_str()) {
                    (Storage::Df11 { .. }, "BF16") => df11.push((t, rel)),
                    (Storage::Dfloat11 { .. }, "BF16") => dfloat11.push((t, rel)),
                    _ => {
                        b.resident.insert(rel, load_tensor(&ckpt, &t.name, device)?);
                        bytes.plain += t.decoded_bytes;
                    }
                }
            }
            let names: Vec<&str> = df11.iter().map(|(t, _)| t.name.as_str()).collect();
            b.group = ckpt.compressed_group(&names)?;
            b.df11_slots = df11.len();
            for (t, rel) in df11.iter().chain(&dfloat11) {
                let (_, shape) = dtype_shape(t)?;
                let offset = b.elements();
                b.slots.push(Slot { name: rel.clone(), numel: shape.iter().product(), shape, offset });
                bytes.compressed += t.stored_bytes;
            }
            if !dfloat11.is_empty() {
                let names: Vec<&str> = dfloat11.iter().map(|(t, _)| t.name.as_str()).collect();
                b.dfloat11_offset = b.slots[b.df11_slots].offset;
                b.dfloat11 = Some(ckpt.group(&names)?);
            }
        }
        // The CPU multiplies by the head in pieces no larger than a block.
        // cuBLAS picks its kernel (and so its summation order) by shape, so on
        // CUDA a pieced product might round differently from the bf16
        // model's whole one: there the head is one piece.
        let budget = if device.is_cpu() { blocks.iter().map(Block::elements).max().unwrap_or(0) } else { usize::MAX };
        let embed = matrix(&ckpt, EMBED, &globals, budget)?;
        let embed = embed.ok_or_else(|| Error::Format(format!("the checkpoint has no {EMBED}")))?;
        let head = matrix(&ckpt, LM_HEAD, &globals, budget)?;
        if let Some(h) = &head
            && (h.rows, h.cols) != (embed.rows, embed.cols)
        {
            return Err(Error::Format(format!(
                "{LM_HEAD} [{}, {}] and {EMBED} [{}, {}] differ in shape",
                h.rows, h.cols, embed.rows, embed.cols
            )));
        }
        for m in std::iter::once(&embed).chain(&head) {
            if let Stored::Pieces { .. } = m.stored {
                let t = ckpt.tensor(m.name).ok_or_else(|| Error::Format(format!("no tensor {}", m.name)))?;
                bytes.compressed += t.stored_bytes;
                bytes.decoded += t.decoded_bytes;
            }
        }
        // The head's pieces go through the block buffer too.
        let head_elems = match &head.as_ref().unwrap_or(&embed).stored {
            Stored::Pieces { pieces, .. } => pieces.iter().map(Block::elements).max().unwrap_or(0),
            Stored::Plain(_) => 0,
        };
        let largest = blocks.iter().map(Block::elements).max().unwrap_or(0).max(head_elems);
        // At least one element: candle and the CUDA driver reject empty allocations.
        let dtype = if device.is_cpu() { DType::F32 } else { DType::BF16 };
        let buffer = Tensor::zeros(largest.max(1), dtype, device)?;
        let widest = if device.is_cpu() {
            0
        } else {
            blocks.iter().filter_map(|b| b.dfloat11.as_ref()).map(|g| g.elements as usize).max().unwrap_or(0)
        };
        // On the CPU there is no scratch (`widest` is 0).
        bytes.block_buffer = (dtype.size_in_bytes() * largest + 2 * widest) as u64;
        #[allow(unused_mut)]
        let mut store = BlockStore {
            ckpt,
            device: device.clone(),
            globals: TensorMap(globals).into_var_builder(DType::BF16, device),
            blocks,
            embed,
            head,
            buffer,
            #[cfg(feature = "candle-cuda")]
            scratch: Mutex::new(vec![0; widest]),
            bytes,
            decode_time: Duration::ZERO,
            decodes: 0,
            #[cfg(feature = "candle-cuda")]
            gpu: None,
        };
        #[cfg(feature = "candle-cuda")]
        super::cuda::upload(&mut store)?;
        Ok(store)
    }

    /// Every block to upload and whether its host copy must stay: the
    /// transformer blocks, then the head's pieces (kept when the head is the
    /// embedding matrix, whose rows are decoded on the host).
    #[cfg(feature = "candle-cuda")]
    pub(super) fn uploads(&mut self) -> impl Iterator<Item = (&mut Block, bool)> {
        let tied = self.head.is_none();
        let head = self.head.as_mut().unwrap_or(&mut self.embed);
        let pieces = match &mut head.stored {
            Stored::Pieces { pieces, .. } => pieces.as_mut_slice(),
            Stored::Plain(_) => &mut [],
        };
        self.blocks.iter_mut().map(|b| (b, false)).chain(pieces.iter_mut().map(move |b| (b, tied)))
    }

    #[cfg(feature = "candle-cuda")]
    pub(super) fn set_gpu(&mut self, gpu: crate::gpu::GpuDecoder) {
        self.gpu = Some(gpu);
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The checkpoint the weights come from.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ckpt
    }

    /// Decodes `b`'s compressed tensors into the buffer, in place.
    fn decode_into_buffer(&self, b: &Block) -> Result<()> {
        Ok(self.buffer.inplace_op1(&DecodeInto {
            ckpt: &self.ckpt,
            block: b,
            #[cfg(feature = "candle-cuda")]
            scratch: &self.scratch,
            #[cfg(feature = "candle-cuda")]
            gpu: self.gpu.as_ref(),
        })?)
    }

    /// Decodes block `i` into the buffer and returns its weights by name
    /// within the block (f32 on the CPU, bf16 on CUDA); see the module docs
    /// for what stays valid how long.
    pub fn decode_block(&mut self, i: usize) -> Result<TensorMap> {
        let nb = self.blocks.len();
        let b = self.blocks.get(i).ok_or_else(|| Error::Format(format!("no block {i} (the model has {nb})")))?;
        let start = Instant::now();
        if !b.slots.is_empty() {
            self.decode_into_buffer(b)?;
        }
        self.decode_time += start.elapsed();
        self.decodes += 1;
        let mut map = b.resident.clone();
        for s in &b.slots {
            map.insert(s.name.clone(), self.buffer.narrow(0, s.offset, s.numel)?.reshape(s.shape.as_slice())?);
        }
        Ok(TensorMap(map))
    }
}

impl Weights for BlockStore {
    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn globals(&self) -> &VarBuilder<'static> {
        &self.globals
    }

    fn block(&mut self, i: usize) -> Result<VarBuilder<'static>> {
        let device = self.device.clone();
        Ok(self.decode_block(i)?.into_var_builder(self.buffer.dtype(), &device))
    }

    fn vocab_hidden(&self) -> (usize, usize) {
        (self.embed.rows, self.embed.cols)
    }

    fn embed(&mut self, ids: &[u32]) -> Result<Tensor> {
        let m = &self.embed;
        let (rows_per, pieces) = match &m.stored {
            Stored::Pieces { rows_per, pieces } => (*rows_per, pieces),
            Stored::Plain(e) => return plain_rows(e, ids),
        };
        let mut bits = vec![bf16::ZERO; ids.len() * m.cols];
        let opts = crate::DecodeOptions { verify_crc: false, parallel: false };
        bits.par_chunks_mut(m.cols).zip(ids).try_for_each(|(row, &id)| {
            let id = id as usize;
            let bad = |e: String| Error::Format(format!("{EMBED}, row {id}: {e}"));
            let t = pieces.get(id / rows_per).and_then(|p| p.group.tensors.first());
            let t = t.ok_or_else(|| bad(format!("not a row of the {} in host memory", m.rows)))?;
            let start = ((id % rows_per) * m.cols) as u64;
            crate::decode::decode_range_into(t, start, bytemuck::cast_slice_mut(row), &opts)
                .map_err(|e| bad(e.to_string()))
        })?;
        Ok(Tensor::from_vec(bits, (ids.len(), m.cols), &Device::Cpu)?.to_device(&self.device)?)
    }

    fn lm_head(&mut self, x: &Tensor) -> Result<Tensor> {
        let m = self.head.as_ref().unwrap_or(&self.embed);
        let pieces = match &m.stored {
            Stored::Plain(h) => return plain_logits(h, x),
            Stored::Pieces { pieces, .. } => pieces,
        };
        let mut parts = Vec::with_capacity(pieces.len());
        for b in pieces {
            self.decode_into_buffer(b)?;
            let s = &b.slots[0];
            let w = self.buffer.narrow(0, 0, s.numel)?.reshape(s.shape.as_slice())?;
            // f32 on the CPU, bf16 on CUDA: multiplied as a block weight is.
            parts.push(super::llama::linear(&w, x)?);
        }
        Ok(Tensor::cat(&parts, x.rank() - 1)?)
    }

    fn bytes(&self) -> WeightBytes {
        self.bytes
    }

    fn decode_time(&self) -> (Duration, u64) {
        (self.decode_time, self.decodes)
    }
}

//! Weights for the model: [`BlockStore`] keeps every transformer block
//! compressed and decodes one block at a time into a single reused buffer;
//! [`PlainWeights`] holds every tensor decoded, as candle models usually do.
//! Both implement [`Weights`], which is all the model sees.
//!
//! # The block buffer
//!
//! A block is every tensor named `model.layers.{i}.*`. Its df11-compressed
//! tensors are laid back to back in one buffer sized for the largest block;
//! [`Weights::block`] decodes them into it in place (a candle
//! [`InplaceOp1`]: no allocation) and hands out each weight as a view:
//! `buffer.narrow(0, offset, n).reshape(shape)`, which shares the buffer's
//! storage.
//!
//! On CUDA the buffer is bf16 and the decoder writes it directly. On the CPU
//! it is f32: candle 0.11's CPU matmul has no bf16 kernel and widens *the
//! whole storage* of a bf16 operand to f32 on every call, which for a view
//! into a block buffer means the whole block, seven times per block. So each
//! tensor is decoded into a reused bf16 scratch (the largest tensor's size)
//! and widened into the f32 buffer once per block decode; the model then
//! multiplies in f32, as candle does for bf16 (widening bf16 is exact, so the
//! results keep their bits). What one call allocates is the tensor handles and the
//! name map (a few hundred bytes per weight), never weight data; the test
//! `decoded_blocks_are_views_with_the_original_bits` checks that the weights
//! alias the buffer.
//!
//! The views of block `i` stay valid only until the next `block` call, which
//! overwrites the buffer: the model uses them within the block's forward pass.
//!
//! Tensors of a block that are not compressed (a checkpoint may keep small
//! or non-bf16 tensors raw) and every tensor outside the blocks (embeddings,
//! final norm, `lm_head`) are loaded once, at open.

use super::backend::TensorMap;
use super::source::{Stored, TensorMeta, WeightSource};
use super::{Error, Result};
use crate::Group;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Tensor};
use candle_nn::VarBuilder;
use half::bf16;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Name prefix of the transformer blocks' tensors.
const BLOCK_PREFIX: &str = "model.layers.";

/// The block index and the name within the block, for a block tensor.
pub fn block_of(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix(BLOCK_PREFIX)?;
    let (i, rel) = rest.split_once('.')?;
    Some((i.parse().ok()?, rel))
}

/// Weight memory, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WeightBytes {
    /// Compressed block weights (df11 containers as held in memory).
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
    /// Weight memory.
    fn bytes(&self) -> WeightBytes;
    /// Time spent decoding blocks so far, and the number of block decodes.
    fn decode_time(&self) -> (Duration, u64) {
        (Duration::ZERO, 0)
    }
}

/// Loads a stored tensor as an ordinary tensor (decoding a compressed one).
fn load_tensor(meta: &TensorMeta, stored: Stored<'_>, device: &Device) -> Result<Tensor> {
    Ok(match stored {
        Stored::Raw(bytes) => Tensor::from_raw_buffer(bytes, meta.dtype, &meta.shape, device)?,
        Stored::Df11(t) => {
            let mut v = vec![bf16::ZERO; meta.numel()];
            crate::decompress_into(&t, &mut v).map_err(|e| Error::Format(format!("tensor {}: {e}", meta.name)))?;
            Tensor::from_vec(v, meta.shape.as_slice(), device)?
        }
    })
}

/// Every tensor of a source decoded and held as an ordinary tensor: the
/// baseline a bf16 model is.
pub struct PlainWeights {
    vb: VarBuilder<'static>,
    bytes: WeightBytes,
    num_blocks: usize,
}

impl PlainWeights {
    /// Loads every tensor of `src` on `device`.
    pub fn load(src: &dyn WeightSource, device: &Device) -> Result<Self> {
        let mut map = HashMap::new();
        let mut bytes = 0u64;
        let mut num_blocks = 0;
        for m in src.tensors() {
            map.insert(m.name.clone(), load_tensor(m, src.stored(&m.name)?, device)?);
            bytes += m.bytes() as u64;
            if let Some((i, _)) = block_of(&m.name) {
                num_blocks = num_blocks.max(i + 1);
            }
        }
        let vb = TensorMap(map).into_var_builder(DType::BF16, device);
        Ok(PlainWeights { vb, bytes: WeightBytes { plain: bytes, decoded: bytes, ..Default::default() }, num_blocks })
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
        Ok(self.vb.pp(format!("{BLOCK_PREFIX}{i}")))
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
    offset: usize,
    numel: usize,
}

/// One transformer block: its compressed tensors and where they go.
pub(super) struct Block {
    slots: Vec<Slot>,
    /// The compressed tensors, in slot order (on CUDA: uploaded, and the host
    /// copy dropped).
    pub(super) group: Group,
    #[cfg(feature = "candle-cuda")]
    pub(super) device_group: Option<crate::gpu::DeviceGroup>,
    /// Uncompressed tensors of the block, loaded once (names within the block).
    resident: HashMap<String, Tensor>,
}

/// Every block kept compressed, decoded one at a time into one reused buffer.
pub struct BlockStore {
    device: Device,
    globals: VarBuilder<'static>,
    blocks: Vec<Block>,
    /// The block buffer, `[largest block's compressed elements]`: f32 on
    /// the CPU, bf16 on CUDA.
    buffer: Tensor,
    /// CPU: one tensor's bf16 decode, widened into `buffer`.
    scratch: std::sync::Mutex<Vec<bf16>>,
    bytes: WeightBytes,
    decode_time: Duration,
    decodes: u64,
    #[cfg(feature = "candle-cuda")]
    gpu: Option<crate::gpu::GpuDecoder>,
}

/// Decodes a block's compressed tensors into the buffer, in place.
struct DecodeInto<'a> {
    block: &'a Block,
    scratch: &'a std::sync::Mutex<Vec<bf16>>,
    #[cfg(feature = "candle-cuda")]
    gpu: Option<&'a crate::gpu::GpuDecoder>,
}

impl InplaceOp1 for DecodeInto<'_> {
    fn name(&self) -> &'static str {
        "df11-decode-block"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        use half::slice::HalfFloatSliceExt;
        let CpuStorage::F32(buf) = storage else {
            candle_core::bail!("df11 block buffer is not f32");
        };
        let buf = &mut buf[layout.start_offset()..];
        let mut scratch = self.scratch.lock().map_err(|_| candle_core::Error::msg("df11 scratch poisoned"))?;
        for (slot, t) in self.block.slots.iter().zip(&self.block.group.tensors) {
            let out = buf
                .get_mut(slot.offset..slot.offset + slot.numel)
                .ok_or_else(|| candle_core::Error::msg("df11 block buffer too small"))?;
            let tmp = scratch.get_mut(..slot.numel).ok_or_else(|| candle_core::Error::msg("df11 scratch too small"))?;
            crate::decompress_into(t, tmp).map_err(|e| candle_core::Error::msg(format!("{}: {e}", slot.name)))?;
            tmp.convert_to_f32_slice(out);
        }
        Ok(())
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(&self, storage: &mut candle_core::CudaStorage, layout: &Layout) -> candle_core::Result<()> {
        super::cuda::decode_into(self.gpu, self.block, storage, layout)
    }
}

impl BlockStore {
    /// Reads `src`: block tensors that are df11-compressed stay compressed
    /// (on CUDA, uploaded once); everything else is loaded decoded on `device`.
    pub fn load(src: &dyn WeightSource, device: &Device) -> Result<Self> {
        let mut globals = HashMap::new();
        let mut blocks: Vec<Block> = Vec::new();
        let mut bytes = WeightBytes::default();
        for m in src.tensors() {
            bytes.decoded += m.bytes() as u64;
            let stored = src.stored(&m.name)?;
            let Some((i, rel)) = block_of(&m.name) else {
                globals.insert(m.name.clone(), load_tensor(m, stored, device)?);
                bytes.plain += m.bytes() as u64;
                continue;
            };
            // Every block has a tensor, so a larger index is a bogus name
            // (and must not size an allocation).
            if i >= src.tensors().len() {
                return Err(Error::Format(format!("tensor {}: block index {i} is implausible", m.name)));
            }
            while blocks.len() <= i {
                blocks.push(Block {
                    slots: vec![],
                    group: Group::default(),
                    #[cfg(feature = "candle-cuda")]
                    device_group: None,
                    resident: HashMap::new(),
                });
            }
            let b = &mut blocks[i];
            match stored {
                Stored::Df11(t) => {
                    let offset = b.slots.last().map_or(0, |s| s.offset + s.numel);
                    bytes.compressed += t.serialized_len();
                    b.slots.push(Slot { name: rel.to_string(), shape: m.shape.clone(), offset, numel: m.numel() });
                    b.group.tensors.push(*t);
                }
                raw @ Stored::Raw(_) => {
                    b.resident.insert(rel.to_string(), load_tensor(m, raw, device)?);
                    bytes.plain += m.bytes() as u64;
                }
            }
        }
        let largest = blocks.iter().map(|b| b.slots.last().map_or(0, |s| s.offset + s.numel)).max().unwrap_or(0);
        // At least one element: candle and the CUDA driver reject empty allocations.
        let dtype = if device.is_cpu() { DType::F32 } else { DType::BF16 };
        let buffer = Tensor::zeros(largest.max(1), dtype, device)?;
        let widest =
            if device.is_cpu() { blocks.iter().flat_map(|b| &b.slots).map(|s| s.numel).max().unwrap_or(0) } else { 0 };
        bytes.block_buffer = (dtype.size_in_bytes() * largest + 2 * widest) as u64;
        #[allow(unused_mut)]
        let mut store = BlockStore {
            device: device.clone(),
            globals: TensorMap(globals).into_var_builder(DType::BF16, device),
            blocks,
            buffer,
            scratch: std::sync::Mutex::new(vec![bf16::ZERO; widest]),
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

    #[cfg(feature = "candle-cuda")]
    pub(super) fn blocks_mut(&mut self) -> &mut [Block] {
        &mut self.blocks
    }

    #[cfg(feature = "candle-cuda")]
    pub(super) fn set_gpu(&mut self, gpu: crate::gpu::GpuDecoder) {
        self.gpu = Some(gpu);
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Decodes block `i` into the buffer and returns its weights by name
    /// within the block (f32 on the CPU, bf16 on CUDA); see the module docs
    /// for what stays valid how long.
    pub fn decode_block(&mut self, i: usize) -> Result<TensorMap> {
        let nb = self.blocks.len();
        let b = self.blocks.get(i).ok_or_else(|| Error::Format(format!("no block {i} (the model has {nb})")))?;
        let start = Instant::now();
        if !b.slots.is_empty() {
            self.buffer.inplace_op1(&DecodeInto {
                block: b,
                scratch: &self.scratch,
                #[cfg(feature = "candle-cuda")]
                gpu: self.gpu.as_ref(),
            })?;
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

    fn bytes(&self) -> WeightBytes {
        self.bytes
    }

    fn decode_time(&self) -> (Duration, u64) {
        (self.decode_time, self.decodes)
    }
}

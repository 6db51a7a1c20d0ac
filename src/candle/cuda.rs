//! The block store on CUDA: each block's compressed tensors are uploaded once
//! as a df11 `DeviceGroup`, and a block decode is one launch of df11's GPU
//! decoder into the block buffer, on candle's stream (so candle's kernels
//! that read the views are ordered after it).
//!
//! The decoder checks that stream, group and output share its CUDA context,
//! so it is built on candle's context ([`crate::gpu::decoder_on`]). DFloat11
//! modules are decoded on the CPU and copied after the df11 tensors.

use super::store::{BlockStore, DecodeInto};
use super::{Error, Result};
use crate::Group;
use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, Device, Layout};
use half::bf16;

/// Uploads every block of a store on a CUDA device and drops the host copies.
pub(super) fn upload(store: &mut BlockStore) -> Result<()> {
    let Device::Cuda(dev) = store.device().clone() else { return Ok(()) };
    let gpu = crate::gpu::decoder_on(dev.cuda_stream().context().clone())
        .map_err(|e| Error::Format(format!("df11 GPU decoder: {e}")))?;
    for (b, keep_host) in store.uploads() {
        if !b.group.tensors.is_empty() {
            b.device_group = Some(gpu.upload(&b.group).map_err(|e| Error::Format(format!("df11 upload: {e}")))?);
            if !keep_host {
                b.group = Group::default();
            }
        }
    }
    store.set_gpu(gpu);
    Ok(())
}

/// Enqueues the decode of a block into the buffer `storage`: its df11
/// containers in one launch at the start, then its DFloat11 weights, decoded
/// on the CPU and copied after them.
pub(super) fn decode_into(d: &DecodeInto<'_>, storage: &mut CudaStorage, layout: &Layout) -> candle_core::Result<()> {
    let block = d.block;
    let stream = storage.device().cuda_stream();
    let slice = storage.as_cuda_slice_mut::<bf16>()?;
    let mut view = slice.slice_mut(layout.start_offset()..);
    let len = view.len();
    // SAFETY: bf16 and u16 have the same size and alignment and share every
    // bit pattern; the view covers the same `len` elements.
    let mut out = unsafe { view.transmute_mut::<u16>(len) }
        .ok_or_else(|| candle_core::Error::msg("df11 block buffer cannot be viewed as u16"))?;
    if block.df11_slots > 0 {
        let (Some(gpu), Some(group)) = (d.gpu, block.device_group.as_ref()) else {
            candle_core::bail!("df11 block was not uploaded to the GPU");
        };
        gpu.decode_into(group, &mut out, &stream).map_err(candle_core::Error::msg)?;
    }
    let mut scratch = d.scratch.lock().map_err(|_| candle_core::Error::msg("df11 scratch poisoned"))?;
    let bits = dfloat11_bits(d, &mut scratch)?;
    if !bits.is_empty() {
        let end = block.dfloat11_offset + bits.len();
        if end > out.len() {
            candle_core::bail!("df11 block buffer too small");
        }
        let mut dst = out.slice_mut(block.dfloat11_offset..end);
        stream.memcpy_htod(bits, &mut dst).map_err(candle_core::Error::msg)?;
        // The copy reads the scratch, which the next block decode rewrites.
        stream.synchronize().map_err(candle_core::Error::msg)?;
    }
    Ok(())
}

/// Decodes the block's DFloat11 weights on the CPU into the scratch; returns
/// their bits (empty without any).
fn dfloat11_bits<'s>(d: &DecodeInto<'_>, scratch: &'s mut [u16]) -> candle_core::Result<&'s [u16]> {
    let Some(g) = &d.block.dfloat11 else { return Ok(&[]) };
    let n = usize::try_from(g.elements).map_err(candle_core::Error::msg)?;
    let bits = scratch.get_mut(..n).ok_or_else(|| candle_core::Error::msg("df11 scratch too small"))?;
    d.ckpt.decode_group_into(g, bytemuck::cast_slice_mut(bits)).map_err(candle_core::Error::msg)?;
    if cfg!(target_endian = "big") {
        bits.iter_mut().for_each(|b| *b = b.swap_bytes());
    }
    Ok(bits)
}

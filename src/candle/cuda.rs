//! The block store on CUDA: each block's compressed tensors are uploaded once
//! as a df11 `DeviceGroup`, and a block decode is one launch of df11's GPU
//! decoder into the block buffer, on candle's stream (so candle's kernels
//! that read the views are ordered after it).
//!
//! The decoder checks that stream, group and output share its CUDA context,
//! so it is built on candle's context (`GpuDecoder::with_context`, which
//! df11-host does not have yet: see the module docs of `df11::candle`).

use super::store::{Block, BlockStore};
use super::{Error, Result};
use crate::Group;
use crate::gpu::GpuDecoder;
use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, Device, Layout};
use half::bf16;

/// Uploads every block of a store on a CUDA device and drops the host copies.
pub(super) fn upload(store: &mut BlockStore) -> Result<()> {
    let Device::Cuda(dev) = store.device().clone() else { return Ok(()) };
    let gpu = GpuDecoder::with_context(dev.cuda_stream().context().clone(), crate::PTX)
        .map_err(|e| Error::Format(format!("df11 GPU decoder: {e}")))?;
    for b in store.blocks_mut() {
        if !b.group.tensors.is_empty() {
            b.device_group = Some(gpu.upload(&b.group).map_err(|e| Error::Format(format!("df11 upload: {e}")))?);
            b.group = Group::default();
        }
    }
    store.set_gpu(gpu);
    Ok(())
}

/// Enqueues the decode of `block` into the buffer `storage`.
pub(super) fn decode_into(
    gpu: Option<&GpuDecoder>,
    block: &Block,
    storage: &mut CudaStorage,
    layout: &Layout,
) -> candle_core::Result<()> {
    let (Some(gpu), Some(group)) = (gpu, block.device_group.as_ref()) else {
        candle_core::bail!("df11 block was not uploaded to the GPU");
    };
    let stream = storage.device().cuda_stream();
    let slice = storage.as_cuda_slice_mut::<bf16>()?;
    let mut view = slice.slice_mut(layout.start_offset()..);
    let len = view.len();
    // SAFETY: bf16 and u16 have the same size and alignment and share every
    // bit pattern; the view covers the same `len` elements.
    let mut out = unsafe { view.transmute_mut::<u16>(len) }
        .ok_or_else(|| candle_core::Error::msg("df11 block buffer cannot be viewed as u16"))?;
    gpu.decode_into(group, &mut out, &stream).map_err(candle_core::Error::msg)
}

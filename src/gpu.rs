//! GPU decoding with the kernels embedded in this crate ([`crate::PTX`]).
//!
//! Everything from `df11_host::gpu` is re-exported here; [`decoder`] adds a
//! decoder that needs no PTX argument.

pub use df11_host::gpu::*;

use df11_host::Result;
use std::sync::Arc;

/// A decoder on CUDA device `ordinal` running the embedded kernels.
///
/// Returns an error, never panics, when the machine has no CUDA driver or no
/// such device.
pub fn decoder(ordinal: usize) -> Result<GpuDecoder> {
    // SAFETY: `PTX` is this crate's build of `df11-gpu`'s kernels, the very
    // version `df11-host` launches (both are workspace path dependencies).
    unsafe { GpuDecoder::with_ptx(ordinal, crate::PTX) }
}

/// A decoder running the embedded kernels in an existing CUDA context (for
/// example candle's, `CudaDevice::cuda_stream().context()`), so that it
/// decodes into that library's buffers on its streams.
pub fn decoder_on(ctx: Arc<cudarc::driver::CudaContext>) -> Result<GpuDecoder> {
    // SAFETY: as in `decoder`: `PTX` is the matching build of the kernels.
    unsafe { GpuDecoder::with_context(ctx, crate::PTX) }
}

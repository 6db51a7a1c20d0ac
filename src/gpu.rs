//! GPU decoding with the kernels embedded in this crate ([`crate::PTX`]).
//!
//! Everything from `df11_host::gpu` is re-exported here; [`decoder`] adds a
//! decoder that needs no PTX argument.

pub use df11_host::gpu::*;

use df11_host::Result;

/// A decoder on CUDA device `ordinal` running the embedded kernels.
///
/// Returns an error, never panics, when the machine has no CUDA driver or no
/// such device.
pub fn decoder(ordinal: usize) -> Result<GpuDecoder> {
    // SAFETY: `PTX` is this crate's build of `df11-gpu`'s kernels, the very
    // version `df11-host` launches (both are workspace path dependencies).
    unsafe { GpuDecoder::with_ptx(ordinal, crate::PTX) }
}

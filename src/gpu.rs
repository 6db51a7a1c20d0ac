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
    GpuDecoder::new(ordinal, crate::PTX)
}

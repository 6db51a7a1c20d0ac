//! df11's host library: the encoder, the container format, the CPU decoders
//! and the GPU launcher.
#![warn(missing_docs)]

pub mod container;
mod crc;
#[cfg(any(test, feature = "emulator"))]
pub mod emu;
pub mod encode;
pub mod error;
pub mod fast;
pub mod gpu;
mod hint;
pub mod reference;
pub mod stats;
pub mod synth;

pub use container::{CompressedTensor, Group, Layout};
pub use df11_gpu::format;
pub use encode::{EncodeOptions, compress, compress_bits, compress_with};
pub use error::{Error, Result};
pub use reference::{decode_reference, decode_reference_into};
pub use stats::{bound_bits_per_weight, entropy_bits, exponent_histogram};

/// Decompresses a tensor into a new buffer, with the fast decoder on the
/// current rayon pool (the data CRC is checked).
pub fn decompress(t: &CompressedTensor) -> Result<Vec<half::bf16>> {
    let bits = fast::decode_parallel(t)?;
    Ok(bytemuck::allocation::cast_vec(bits))
}

/// Decompresses a tensor into `out`, which must hold exactly its element count,
/// with the fast decoder on the current rayon pool (the data CRC is checked).
pub fn decompress_into(t: &CompressedTensor, out: &mut [half::bf16]) -> Result<()> {
    fast::decode_parallel_into(t, bytemuck::cast_slice_mut(out))
}

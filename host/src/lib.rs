//! df11's host library: the encoder, the container format, the CPU decoders
//! and the GPU launcher.
#![warn(missing_docs)]

pub mod container;
mod crc;
pub mod decode;
#[cfg(any(test, feature = "emulator"))]
pub mod emu;
pub mod encode;
pub mod error;
pub mod gpu;
pub mod hint;
pub mod reference;
pub mod stats;
pub mod synth;

pub use container::{CompressedTensor, Group, Layout, TensorView};
pub use decode::DecodeOptions;
pub use df11_gpu::format;
pub use encode::{EncodeOptions, compress, compress_bits, compress_reusing, compress_with};
pub use error::{Error, Result};
pub use reference::{decode_reference, decode_reference_into};
pub use stats::{bound_bits_per_weight, entropy_bits, exponent_histogram};

/// Decompresses a tensor into a new buffer, on the current rayon pool (the
/// data CRC is checked): [`decode::decode`] with the default options.
pub fn decompress(t: &CompressedTensor) -> Result<Vec<half::bf16>> {
    let bits = decode::decode(t, &DecodeOptions::default())?;
    Ok(bytemuck::allocation::cast_vec(bits))
}

/// Decompresses a tensor into `out`, which must hold exactly its element count,
/// on the current rayon pool (the data CRC is checked): [`decode::decode_into`]
/// with the default options.
pub fn decompress_into(t: &CompressedTensor, out: &mut [half::bf16]) -> Result<()> {
    decode::decode_into(t, bytemuck::cast_slice_mut(out), &DecodeOptions::default())
}

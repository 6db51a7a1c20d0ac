//! df11's host library: the encoder, the container format, the CPU decoders
//! and the GPU launcher.
#![warn(missing_docs)]

pub mod container;
pub mod emu;
pub mod fast;

pub use container::{CompressedTensor, Group};
pub use df11_gpu::format;

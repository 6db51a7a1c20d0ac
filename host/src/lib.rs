//! df11's host library: the encoder, the container format, the CPU decoders
//! and the GPU launcher.
#![warn(missing_docs)]

pub use df11_gpu::format;

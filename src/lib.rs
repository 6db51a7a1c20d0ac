//! df11: lossless BF16 weight compression with a GPU decoder written in Rust.
//!
//! This crate is the user-facing front: it re-exports the host library
//! ([`df11_host`]) and embeds the PTX module built from `gpu/`.
#![warn(missing_docs)]

pub use df11_host::*;

pub mod bench;
#[cfg(feature = "candle")]
pub mod candle;
pub mod dfloat11;
pub mod gpu;

/// The decode kernels as PTX text, built from the `gpu/` crate by `build.rs`.
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/df11_kernels.ptx"));

/// Entry-point names inside [`PTX`].
pub use df11_gpu::KERNEL_NAMES;

//! df11: lossless BF16 weight compression with a GPU decoder written in Rust.
//!
//! This crate is the user-facing front: it re-exports the host library
//! ([`df11_host`]: the codec, container format, CPU and GPU decoders), embeds
//! the PTX module built from `gpu/`, and reads and writes checkpoints
//! ([`checkpoint`]: df11, plain safetensors and DFloat11; decoding by tensor
//! or by transformer block).
#![warn(missing_docs)]

pub use df11_host::*;

pub mod bench;
#[cfg(feature = "candle")]
pub mod candle;
pub mod checkpoint;
pub mod dfloat11;
#[cfg(feature = "gpu")]
pub mod gpu;

/// The decode kernels as PTX text.
///
/// Built from the `gpu/` crate by `build.rs` where the pinned nightly with
/// `rust-src` and `llvm-tools` is at hand; elsewhere (stable Rust, a published
/// package) the committed build, [`df11_gpu::PTX`]. CI checks the two are the
/// same bytes.
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/df11_kernels.ptx"));

/// Entry-point names inside [`PTX`].
pub use df11_gpu::KERNEL_NAMES;

// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

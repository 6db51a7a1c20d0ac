//! The `no_std` half of df11.
//!
//! This crate is compiled twice:
//! * for the host, as an ordinary dependency of `df11-host`, so the format
//!   constants, the decode-table builder and the kernels' per-thread logic
//!   have exactly one home and can be tested on the CPU;
//! * for `nvptx64-nvidia-cuda` by the workspace's `build.rs`, which turns it
//!   into the PTX module embedded in the `df11` crate.
//!
//! That PTX is also committed, as `df11_kernels.ptx` next to this crate's
//! manifest, and exported as [`PTX`]: building it needs a pinned nightly with
//! `rust-src` and `llvm-tools`, while depending on df11 must work on stable.
//! CI rebuilds it and fails if the committed file differs by a byte.
//!
//! Kernel logic is written against the [`thread::Thread`] trait. On the GPU it
//! is backed by the intrinsics in `arch` (the only module with raw asm); on the
//! host, `df11-host`'s block emulator backs it with one OS thread per GPU thread.
#![no_std]
#![cfg_attr(target_arch = "nvptx64", feature(abi_ptx, asm_experimental_arch, link_llvm_intrinsics))]
#![cfg_attr(target_arch = "nvptx64", allow(internal_features))]
#![warn(missing_docs)]

pub mod bits;
pub mod decode;
pub mod format;
mod lanes;
pub mod mem;
pub mod table;
pub mod thread;

#[cfg(target_arch = "nvptx64")]
mod arch;
#[cfg(target_arch = "nvptx64")]
mod kernels;

/// Names of the `extern "ptx-kernel"` entry points in the PTX module.
///
/// `build.rs` keeps exactly these symbols visible when it links the module;
/// the host launcher looks them up by the same names.
pub const KERNEL_NAMES: &[&str] =
    &[decode::KERNEL_NAME, decode::LANES_KERNEL_NAME, decode::LANES9_KERNEL_NAME, decode::INDEX_KERNEL_NAME];

/// The kernels as PTX text: the committed build of this crate for
/// `nvptx64-nvidia-cuda` (sm_80, PTX ISA 7.0).
#[cfg(not(target_arch = "nvptx64"))]
pub const PTX: &str = include_str!("../df11_kernels.ptx");

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    arch::trap()
}

//! The `no_std` half of df11.
//!
//! This crate is compiled twice:
//! * for the host, as an ordinary dependency of `df11-host`, so the format
//!   constants, the decode-table builder and the kernels' per-thread logic
//!   have exactly one home and can be tested on the CPU;
//! * for `nvptx64-nvidia-cuda` by the workspace's `build.rs`, which turns it
//!   into the PTX module embedded in the `df11` crate.
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
pub mod demo;
pub mod format;
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
pub const KERNEL_NAMES: &[&str] = &[demo::KERNEL_NAME, decode::KERNEL_NAME];

#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    arch::trap()
}

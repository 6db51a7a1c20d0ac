//! The GPU integration tests' one way to get a device or skip.
//!
//! Without a CUDA driver or device a test reports a skip and passes (the
//! emulated-kernel tests in `df11-host` cover the logic there), unless
//! `DF11_REQUIRE_GPU` is set, as `scripts/gpu-check.sh` does on a GPU machine:
//! then a missing driver or device fails the test.

use df11::gpu::GpuDecoder;

/// Skips (returns `None`) with `why`, or fails under `DF11_REQUIRE_GPU`.
pub fn skip<T>(why: &str) -> Option<T> {
    assert!(std::env::var_os("DF11_REQUIRE_GPU").is_none(), "DF11_REQUIRE_GPU is set but {why}");
    eprintln!("SKIPPED: {why}");
    None
}

/// The decoder on device 0, or a skip. With a device present, failing to
/// load the kernels is a test failure, not a skip.
pub fn decoder() -> Option<GpuDecoder> {
    // SAFETY: probing for the driver library only loads and drops it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return skip("no CUDA driver library on this machine");
    }
    match cudarc::driver::CudaContext::device_count() {
        Ok(n) if n > 0 => Some(df11::gpu::decoder(0).expect("a CUDA device is present: the decoder must load")),
        other => skip(&format!("CUDA driver present but no usable device ({other:?})")),
    }
}

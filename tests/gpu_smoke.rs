//! Runs the demo kernel from the embedded PTX on a real GPU and compares it
//! with the same logic run on the CPU. Without a CUDA driver or device it
//! reports a skip and passes: the emulator tests cover the logic there.

use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

#[test]
fn demo_kernel_runs_on_the_gpu() {
    // SAFETY: probing for the driver library only loads and drops it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        eprintln!("SKIPPED: no CUDA driver library on this machine");
        return;
    }
    let ctx = match CudaContext::new(0) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("SKIPPED: CUDA driver present but no usable device: {e}");
            return;
        }
    };
    let module = ctx.load_module(Ptx::from_src(df11::PTX)).expect("driver accepts the PTX");
    let func = module.load_function(df11_gpu::demo::KERNEL_NAME).expect("kernel is in the module");
    let stream = ctx.default_stream();
    let block = 128u32;
    for len in [1usize, 127, 128, 1000, 1 << 20] {
        let input: Vec<u32> = (0..len as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        let d_in = stream.clone_htod(&input).expect("upload");
        // Poison the output so an element the kernel skips cannot pass.
        let mut d_out = stream.clone_htod(&vec![0xFFFF_FFFFu32; len]).expect("alloc output");
        let cfg = LaunchConfig { grid_dim: (7, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: block * 4 };
        let mut launch = stream.launch_builder(&func);
        launch.arg(&d_in).arg(&mut d_out).arg(&len);
        // SAFETY: the kernel reads `len` u32s from d_in, writes `len` to d_out,
        // and uses blockDim.x words of shared memory, which cfg provides.
        unsafe { launch.launch(cfg) }.expect("launch");
        let got = stream.clone_dtoh(&d_out).expect("download");
        let want: Vec<u32> = input.chunks(block as usize).flat_map(|c| c.iter().rev().copied()).collect();
        assert_eq!(got, want, "len {len}");
    }
    println!("demo kernel ran bit-exact on the GPU");
}

//! Loads the embedded PTX with the driver directly, finds every kernel in it,
//! and decodes one tiny group with the real decode kernel, bit-exact. Without
//! a CUDA driver or device it reports a skip and passes, unless
//! `DF11_REQUIRE_GPU` is set (see `gpu_common`).
#![cfg(feature = "cuda")]

mod gpu_common;

use cudarc::nvrtc::Ptx;
use df11::{EncodeOptions, Group, Layout, compress_with};

#[test]
fn embedded_ptx_loads_and_decodes_on_the_gpu() {
    let Some(dec) = gpu_common::decoder() else { return };
    let module = dec.stream().context().load_module(Ptx::from_src(df11::PTX)).expect("driver accepts the PTX");
    for name in df11::KERNEL_NAMES {
        module.load_function(name).unwrap_or_else(|e| panic!("kernel {name} is not in the module: {e}"));
    }
    // 1000 scattered bit patterns: many exponents, and a partial last row.
    let bits: Vec<u16> = (0..1000u16).map(|i| i.wrapping_mul(40_503)).collect();
    // Each layout has its own kernel.
    for layout in [Layout::Lanes, Layout::Warp] {
        let t = compress_with(&bits, &EncodeOptions { layout, ..Default::default() });
        let group = Group { tensors: vec![t] };
        let got = dec.upload(&group).and_then(|mut g| dec.decode(&mut g)).expect("decode");
        assert_eq!(got, bits, "{layout:?}");
    }
    println!("both decode kernels ran bit-exact on the GPU");
}

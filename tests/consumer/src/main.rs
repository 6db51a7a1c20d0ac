//! Uses df11 as a dependency: compresses a bf16 tensor, decompresses it bit
//! for bit, and asks for a GPU decoder, which must fail cleanly (an `Err`,
//! not a panic) on a machine without a CUDA driver. `DF11_CONSUMER_GPU`
//! says what to expect: `absent` (an `Err`), `present` (a decoder), unset
//! (either). Exits non-zero on any failure.

use half::bf16;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Values shaped like weights, plus every special: NaN, infinities, -0,
    // subnormals.
    let mut data: Vec<bf16> = (0..100_000).map(|i| bf16::from_f32(((i as f32) * 0.37).sin() * 0.02)).collect();
    data.extend([bf16::NAN, bf16::INFINITY, bf16::NEG_INFINITY, bf16::NEG_ZERO, bf16::from_bits(1)]);
    let tensor = df11::compress(&data);
    let back = match df11::decompress(&tensor) {
        Ok(back) => back,
        Err(e) => {
            eprintln!("FAIL: decompress: {e}");
            return ExitCode::FAILURE;
        }
    };
    if back.iter().map(|v| v.to_bits()).ne(data.iter().map(|v| v.to_bits())) {
        eprintln!("FAIL: the round trip is not bit-exact");
        return ExitCode::FAILURE;
    }
    println!("round trip of {} values bit-exact", data.len());
    let expect = std::env::var("DF11_CONSUMER_GPU").unwrap_or_default();
    match df11::gpu::decoder(0) {
        Err(e) if expect != "present" => println!("no GPU decoder: {e}"),
        Ok(_) if expect != "absent" => println!("GPU decoder loaded"),
        Err(e) => {
            eprintln!("FAIL: no GPU decoder although DF11_CONSUMER_GPU=present: {e}");
            return ExitCode::FAILURE;
        }
        Ok(_) => {
            eprintln!("FAIL: a GPU decoder loaded although DF11_CONSUMER_GPU=absent");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

//! Speed of the DFloat11 module encoder on one synthetic Llama MLP unit
//! (gate, up and down projections), in MB/s of bf16 input.
//!
//! `cargo run --release --example dfloat11_encode -- [HIDDEN] [RAW_OUT]`
//! (default hidden 2048, intermediate 5632). With RAW_OUT, the unit's bf16 bits
//! are also written there (little-endian, concatenated in order) with the
//! weight sizes in `RAW_OUT.json`, to time another encoder on the same input.

use df11::dfloat11::write::{Weight, encode_module};
use df11::synth::realistic_weights;
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hidden: usize = args.first().map_or(2048, |s| s.parse().expect("HIDDEN is a number"));
    let inter = (hidden * 11 / 4).div_ceil(256) * 256;
    let weights = [
        ("gate_proj", realistic_weights(inter, hidden, 0.018, 1)),
        ("up_proj", realistic_weights(inter, hidden, 0.016, 2)),
        ("down_proj", realistic_weights(hidden, inter, 0.011, 3)),
    ];
    if let Some(raw) = args.get(1) {
        let bytes: Vec<u8> = weights.iter().flat_map(|(_, w)| w.iter().flat_map(|b| b.to_le_bytes())).collect();
        std::fs::write(raw, bytes)?;
        let sizes: Vec<usize> = weights.iter().map(|(_, w)| w.len()).collect();
        std::fs::write(format!("{raw}.json"), serde_json::to_string(&sizes)?)?;
    }
    let ws: Vec<Weight> = weights.iter().map(|(n, w)| Weight { name: n, bits: w }).collect();
    let input = 2 * ws.iter().map(|w| w.bits.len()).sum::<usize>();
    let mut best = f64::MAX;
    let mut stored = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let e = encode_module(&ws).expect("synthetic weights are encodable");
        best = best.min(t.elapsed().as_secs_f64());
        stored = e.stored_bytes();
    }
    println!(
        "{:.1} MB of bf16 in {:.3} s: {:.0} MB/s on {} threads; stored {:.2}% of the input",
        input as f64 / 1e6,
        best,
        input as f64 / 1e6 / best,
        rayon::current_num_threads(),
        100.0 * stored as f64 / input as f64
    );
    Ok(())
}

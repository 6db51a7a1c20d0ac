//! How many loop iterations the GPU's lanes kernel takes per row, on
//! synthetic weights shaped like a trained model's: the input of the GPU
//! prediction in `docs/PERFORMANCE.md`.
//!
//! The kernel's row loop runs until every lane of the warp has its eight
//! exponents, one multi-symbol lookup per iteration (`df11_gpu::table::
//! multi_entry`: whole codes inside 12 bits, at most four, at most what the
//! row still needs). So a row costs the *most* lookups any of its 32 lanes
//! needs. This counts that, and the lanes' mean, from the code lengths the
//! production encoder chose.
//!
//! `cargo run --release -p df11-host --example gpu_steps [ROWS COLS [SCALE]]`

use df11_gpu::bits::exponent;
use df11_gpu::format::{LANE_RUN, LANES, ROW_ELEMS, TABLE_BITS};
use df11_gpu::table::MULTI_MAX;
use df11_host::{EncodeOptions, Layout, compress_with, synth};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| args.get(i).map_or(d, |s| s.parse().expect("a number"));
    let (rows, cols) = (arg(0, 4096), arg(1, 4096));
    let scale: f32 = args.get(2).map_or(0.02, |s| s.parse().expect("a number"));
    let bits = synth::realistic_weights(rows, cols, scale, 1);
    // The lanes layout's 8-bit exponent codes, whatever the default.
    let t = compress_with(&bits, &EncodeOptions { layout: Layout::Lanes, ..Default::default() });
    let len = |b: u16| u32::from(t.code_lengths[exponent(b) as usize]);
    let (mut max_sum, mut lane_sum, mut rows_seen, mut hist) = (0u64, 0u64, 0u64, [0u64; 9]);
    for row in bits.chunks_exact(ROW_ELEMS) {
        let mut most = 0;
        for lane in row.chunks_exact(LANE_RUN) {
            // Greedy as the kernel: each lookup takes the whole codes that
            // start a 12-bit window, up to four.
            let (mut i, mut lookups) = (0, 0);
            while i < LANE_RUN {
                let (mut used, mut n) = (0, 0);
                while i + n < LANE_RUN && n < MULTI_MAX as usize && used + len(lane[i + n]) <= TABLE_BITS {
                    used += len(lane[i + n]);
                    n += 1;
                }
                i += n.max(1);
                lookups += 1;
            }
            lane_sum += lookups;
            most = most.max(lookups);
        }
        max_sum += most;
        hist[most as usize] += 1;
        rows_seen += 1;
    }
    let bpw = 8.0 * t.words.len() as f64 * 4.0 / bits.len() as f64;
    println!("{rows}x{cols} weights, scale {scale}: {bpw:.3} code bits/weight (lanes, R = {})", t.segment_rows);
    println!(
        "lookups per lane and row: mean {:.3}; iterations per row (most of 32 lanes): mean {:.3}",
        lane_sum as f64 / (rows_seen * LANES as u64) as f64,
        max_sum as f64 / rows_seen as f64
    );
    let share: Vec<String> = hist
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(k, &c)| format!("{k}: {:.3}", c as f64 / rows_seen as f64))
        .collect();
    println!("rows by iterations: {}", share.join(", "));
}

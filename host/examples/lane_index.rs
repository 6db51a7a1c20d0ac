//! What the GPU's lane index costs when a group is loaded: the walk of every
//! code on the CPU (`df11_host::gpu::index`), timed against a CPU decode of
//! the same group in the same run, with the slices it picks and the device
//! memory it takes.
//!
//! `cargo run --release -p df11-host --example lane_index [RESIDENT_WARPS]`
//!
//! `RESIDENT_WARPS` is what `GpuDecoder::upload` asks the index to fill: the
//! lanes kernel's warps resident on the whole device. The default, 1,584, is
//! an H100's or H200's: 132 SMs × 6 blocks (the 32 KiB table plus the 1 KiB
//! each block reserves, in 228 KiB) × 2 warps.

use df11_host::decode::{DecodeOptions, decode_into};
use df11_host::gpu::{GroupLayout, Slicing};
use df11_host::{CompressedTensor, EncodeOptions, Group, Layout, compress_with, synth};
use std::time::Instant;

fn main() {
    let resident: u64 = std::env::args().nth(1).map_or(1584, |s| s.parse().expect("a number"));
    let tensor = |rows: usize, cols: usize, seed: u64| -> CompressedTensor {
        // The lanes layout, as the table in docs/PERFORMANCE.md measured it.
        let opts = EncodeOptions { layout: Layout::Lanes, ..Default::default() };
        compress_with(&synth::realistic_weights(rows, cols, 0.02, seed), &opts)
    };
    // Llama-3.2-1B's block: q, k, v, o, gate, up, down.
    let block_1b = [(2048, 2048), (512, 2048), (512, 2048), (2048, 2048), (8192, 2048), (8192, 2048), (2048, 8192)];
    let cases: Vec<(&str, Group)> = vec![
        ("1 M weights", Group { tensors: vec![tensor(1024, 1024, 1)] }),
        ("16 M weights", Group { tensors: vec![tensor(4096, 4096, 2)] }),
        (
            "Llama-3.2-1B block",
            Group { tensors: block_1b.iter().enumerate().map(|(i, &(r, c))| tensor(r, c, 10 + i as u64)).collect() },
        ),
    ];
    let threads = rayon::current_num_threads();
    println!("{threads} threads; index filling {resident} resident warps; medians of 5\n");
    println!(
        "| group | weights | segments | slice rows | units | index KiB | index ÷ compressed | walk ms | CPU decode ms | walk ÷ decode |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, group) in &cases {
        let weights: u64 = group.tensors.iter().map(|t| t.num_elements).sum();
        let segments: u64 = group.tensors.iter().map(|t| t.num_segments()).sum();
        let base = GroupLayout::new(group).expect("valid group");
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut walks = Vec::new();
        let mut decodes = Vec::new();
        let mut sliced = base.clone();
        let mut rows = None;
        let mut outs: Vec<Vec<u16>> = group.tensors.iter().map(|t| vec![0; t.num_elements as usize]).collect();
        for _ in 0..5 {
            sliced = base.clone();
            let t0 = Instant::now();
            rows = sliced.slice(Slicing::Fill(resident));
            walks.push(t0.elapsed().as_secs_f64() * 1e3);
            let t0 = Instant::now();
            for (t, out) in group.tensors.iter().zip(&mut outs) {
                decode_into(t, out, &DecodeOptions { verify_crc: false, parallel: true }).expect("decodes");
            }
            decodes.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let units: u64 =
            (0..sliced.num_tensors()).map(|i| df11_gpu::decode::TensorDesc::read(&sliced.descs, i).units()).sum();
        let (walk, decode) = (median(walks), median(decodes));
        println!(
            "| {name} | {weights} | {segments} | {} | {units} | {:.1} | {:.2} % | {walk:.1} | {decode:.1} | {:.2} |",
            rows.map_or("–".to_string(), |r| r.to_string()),
            4.0 * sliced.lane_index.len() as f64 / 1024.0,
            400.0 * sliced.lane_index.len() as f64 / base.payload_bytes as f64,
            walk / decode,
        );
    }
}

//! Encode and decode throughput on synthetic realistic weights, for each
//! record layout, at one thread and at all threads, in bf16 bytes per second.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use df11_host::{DecodeOptions, EncodeOptions, Layout, decode};
use std::hint::black_box;

const ELEMENTS: usize = 8 << 20;

fn bench(c: &mut Criterion) {
    let bits = df11_host::synth::realistic_weights(ELEMENTS / 4096, 4096, 0.02, 1);
    let mut out = vec![0u16; ELEMENTS];
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(2 * ELEMENTS as u64)).sample_size(10);
    for layout in [Layout::Lanes, Layout::Warp] {
        let opts = EncodeOptions { layout, ..Default::default() };
        let t = df11_host::compress_with(&bits, &opts);
        let name = layout.name();
        for threads in [1, all] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            g.bench_function(format!("{name}/encode/{threads}t"), |b| {
                b.iter(|| pool.install(|| black_box(df11_host::compress_with(black_box(&bits), &opts))))
            });
            g.bench_function(format!("{name}/decode/{threads}t"), |b| {
                b.iter(|| {
                    pool.install(|| decode::decode_into(black_box(&t), &mut out, &DecodeOptions::default()).unwrap())
                })
            });
            g.bench_function(format!("{name}/decode-nocrc/{threads}t"), |b| {
                let opts = DecodeOptions { verify_crc: false, ..Default::default() };
                b.iter(|| pool.install(|| decode::decode_into(black_box(&t), &mut out, &opts).unwrap()))
            });
        }
        assert_eq!(out, bits);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Where the bytes go on mid-sized tensors (about 150K to 1M weights): every
//! part of a df11 record and of its safetensors header entry, against the
//! 8 + H bound.
//!
//! `cargo run --release --example overhead [-- warp|lanes]` (default: lanes,
//! the encoder's default layout)
//!
//! Columns, in bits/weight: `df11` the whole container; `8+H` the bound;
//! `huff` an unlimited Huffman code's redundancy over the entropy; `lim12`
//! what the 12-bit length limit adds; `tails` unread lane-stream tails and
//! zero words of the refill rule (warp) or each lane's padding to a whole
//! word (lanes); `hdr` the container and record headers (16 + 160 bytes, 128
//! of them the code-length table); `offs` the stream offsets (one per
//! segment in the warp layout, one per lane in the lanes layout); `crc+pad`
//! the record CRC and padding; `json` the tensor's share of the safetensors
//! header in a df11 file (its entry, its df11 metadata entry and the
//! reserved room left as spaces) beyond the plain file's. Then the same
//! parts in bytes, for one tensor (`of it room`: the spaces); and, for tiny
//! tensors, the container's size against what a df11 checkpoint stores (raw
//! when the container would not save `RAW_FALLBACK_MARGIN` bytes).

use df11::checkpoint::{Checkpoint, OwnedTensor, write_file};
use df11::encode::huffman;
use df11::format::{CONTAINER_HEADER_BYTES, MAX_CODE_LEN, TENSOR_HEADER_BYTES};
use df11::synth::{self, Dist, SynthParams};
use df11::{EncodeOptions, Layout, compress_with, decode_reference, entropy_bits, exponent_histogram};

fn params(scale: f32, dist: Dist, seed: u64) -> SynthParams {
    SynthParams::typical(scale, dist, seed)
}

/// The safetensors header of a file of `tensors`, plain or df11: its length,
/// and how much of it is the spaces that pad it to the reserved room.
fn header_len(tensors: &[OwnedTensor], df11: Option<EncodeOptions>) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("m.safetensors");
    write_file(&path, tensors, df11, None).expect("writes");
    let bytes = std::fs::read(&path).expect("reads back");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let spaces = bytes[8..8 + n as usize].iter().rev().take_while(|&&b| b == b' ').count();
    (n, spaces as u64)
}

fn main() {
    let layout = match std::env::args().nth(1).as_deref() {
        None | Some("lanes") => Layout::Lanes,
        Some("warp") => Layout::Warp,
        Some(other) => {
            eprintln!("usage: overhead [warp|lanes] (not {other:?})");
            std::process::exit(2);
        }
    };
    let opts = EncodeOptions { layout, ..Default::default() };
    println!("{} layout, R = {}", layout.name(), opts.segment_rows);
    let cases: Vec<(&str, usize, usize, SynthParams)> = vec![
        ("384x384 gauss", 384, 384, params(0.02, Dist::Gaussian, 11)),
        ("512x384 laplace", 512, 384, params(0.02, Dist::Laplace, 12)),
        ("512x512 gauss", 512, 512, params(0.02, Dist::Gaussian, 13)),
        ("768x512 laplace", 768, 512, params(0.016, Dist::Laplace, 14)),
        ("1024x512 gauss", 1024, 512, params(0.02, Dist::Gaussian, 15)),
        ("1024x768 laplace", 1024, 768, params(0.016, Dist::Laplace, 16)),
        ("1024x1024 gauss", 1024, 1024, params(0.02, Dist::Gaussian, 17)),
    ];
    println!(
        "{:<17} {:>9} {:>3} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "tensor", "N", "S", "df11", "8+H", "gap", "huff", "lim12", "tails", "hdr", "offs", "crc+pad", "json"
    );
    let mut bytes_rows = Vec::new();
    for (name, rows, cols, p) in &cases {
        let bits = synth::weights_with(*rows, *cols, p);
        let n = bits.len() as f64;
        let hist = exponent_histogram(&bits);
        let h = entropy_bits(&hist);
        let t = compress_with(&bits, &opts);
        assert_eq!(decode_reference(&t).expect("decodes"), bits, "round trip of {name}");
        let total = t.to_bytes().len() as f64 * 8.0;
        let limited = huffman::coded_bits(&hist, &huffman::code_lengths(&hist, MAX_CODE_LEN)) as f64;
        let unlimited = huffman::coded_bits(&hist, &huffman::code_lengths(&hist, 64)) as f64;
        let stream = 32.0 * t.words.len() as f64;
        let headers = (CONTAINER_HEADER_BYTES + TENSOR_HEADER_BYTES) as f64 * 8.0;
        let offsets = 32.0 * t.stream_offsets.len() as f64;
        // What is left: the record CRC and the padding before it.
        let crc_pad = total - headers - offsets - stream - 8.0 * n;
        // Eight tensors with model-like names, so the header's fixed part is shared.
        let data: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let tensors: Vec<OwnedTensor> = (0..8)
            .map(|i| {
                let shape = vec![*rows as u64, *cols as u64];
                OwnedTensor::new(format!("model.layers.{i}.self_attn.q_proj.weight"), "BF16", shape, data.clone())
            })
            .collect();
        let ((df11_len, df11_spaces), (plain_len, plain_spaces)) =
            (header_len(&tensors, Some(opts)), header_len(&tensors, None));
        let per = |b: u64| b as f64 * 8.0 / tensors.len() as f64;
        let json = per(df11_len - plain_len);
        let room = per(df11_spaces) - per(plain_spaces);
        let s = t.num_segments();
        println!(
            "{:<17} {:>9} {:>3} {:>8.4} {:>8.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4}",
            name,
            bits.len(),
            s,
            total / n,
            8.0 + h,
            total / n - 8.0 - h,
            unlimited / n - h,
            (limited - unlimited) / n,
            (stream - limited) / n,
            headers / n,
            offsets / n,
            crc_pad / n,
            json / n,
        );
        bytes_rows.push((
            *name,
            [(unlimited - n * h) / 8.0, (limited - unlimited) / 8.0, (stream - limited) / 8.0],
            [headers / 8.0, offsets / 8.0, crc_pad / 8.0, json / 8.0, room / 8.0],
        ));
    }
    println!("\nbytes per tensor:");
    println!(
        "{:<17} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11}",
        "tensor", "huff", "lim12", "tails", "hdr", "offs", "crc+pad", "json", "of it room"
    );
    for (name, code, fixed) in bytes_rows {
        println!(
            "{:<17} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.1} {:>11.1}",
            name, code[0], code[1], code[2], fixed[0], fixed[1], fixed[2], fixed[3], fixed[4]
        );
    }

    println!("\ntiny tensors, bits/weight: the df11 container, and what a df11 checkpoint stores");
    println!("{:<17} {:>9} {:>10} {:>10} {:>8}", "tensor", "N", "container", "stored", "storage");
    let realistic = |n: usize, seed| synth::weights_with(1, n, &params(0.02, Dist::Gaussian, seed));
    // Every exponent equally often: nothing to gain.
    let spread = |n: usize| (0..n).map(|i| (((i * 97) % 256) << 7 | (i * 37) & 0x7F) as u16).collect::<Vec<u16>>();
    let norm = |n: usize| synth::weights_with(1, n, &params(1.0, Dist::Gaussian, 21));
    let tiny: Vec<(&str, Vec<u16>)> = vec![
        ("1 weight", realistic(1, 31)),
        ("7 weights", realistic(7, 32)),
        ("64 gauss", realistic(64, 33)),
        ("384 gauss", realistic(384, 34)),
        ("384 norm s=1", norm(384)),
        ("384 every exp", spread(384)),
        ("1024 gauss", realistic(1024, 35)),
        ("4096 gauss", realistic(4096, 36)),
    ];
    for (name, bits) in tiny {
        let n = bits.len() as f64;
        let container = compress_with(&bits, &opts).to_bytes().len() as f64;
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("t.safetensors");
        let data: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let src = vec![OwnedTensor::new("t", "BF16", vec![bits.len() as u64], data)];
        write_file(&path, &src, Some(opts), None).expect("writes");
        let e = Checkpoint::open(&path).expect("opens").tensor("t").expect("listed");
        println!(
            "{:<17} {:>9} {:>10.2} {:>10.2} {:>8}",
            name,
            bits.len(),
            container * 8.0 / n,
            e.stored_bytes as f64 * 8.0 / n,
            e.storage.name()
        );
    }
}

//! What the exponent coder leaves on the table, and what other coders would
//! take: measured on a BERT-base-shaped checkpoint of synthetic weights.
//!
//! `cargo run --release --example coders [-- CHECKPOINT]`
//!
//! With a checkpoint (a plain safetensors file or directory), its BF16
//! tensors are measured instead of the synthetic ones; the whole file is
//! then those tensors alone, written with df11's defaults.
//!
//! First the whole file in the lanes layout (every byte counted) against
//! its per-tensor `8 + H` bound, split into its parts, and as df11 writes it
//! by default (lanes9). Then, over the same tensors, the exponent
//! stream alone under other coders, in bits/weight over `H` (weighted by
//! tensor size; negative means below the order-0 bound):
//!
//! * `huff12`: df11's code (Huffman, 12-bit length limit);
//! * `huff`: the unlimited Huffman code;
//! * `tans11`, `tans12`: a table ANS coder's ideal cost with the probabilities
//!   quantized to 2^11 or 2^12 slots (what the quantization costs; the coder's
//!   own loss is a few thousandths of a bit more);
//! * `pair`: an unlimited Huffman code over pairs of neighbouring exponents
//!   (the alphabet extension: it removes part of the redundancy and takes the
//!   neighbours' correlation);
//! * `H2/2`: the pair entropy per weight, what `pair` could reach;
//! * `ctx1`: the entropy of an exponent given the one before it (a coder with
//!   one table per preceding exponent);
//! * `+m6`: the entropy of the exponent and the mantissa's top bit together,
//!   less that one raw bit (coding the bit with the exponent);
//! * `huff9`: what an unlimited Huffman code over those 9-bit symbols
//!   takes, less the raw bit; `huff9/12` the same with df11's 12-bit length
//!   limit;
//! * `+m5`: the same with the mantissa's top two bits (10-bit symbols);
//! * `c256K`, `c64K`: the exponent entropy measured over chunks of 262,144
//!   weights (an R = 1024 segment) or of 65,536, each chunk with its own
//!   histogram (what a code per chunk could reach before its table's cost);
//! * `sm`: an unlimited Huffman code over the sign+mantissa bytes, less their
//!   8 raw bits (a second coded stream, as ZipNN does when it pays).
//!
//! The synthetic generator's neighbour correlation (a scale per row) is a
//! guess at real weights', so `pair`'s gain beyond `huff`, and `ctx1`, are
//! indications; `huff12`, `huff`, `tans` and `+m6` depend on the exponent
//! and mantissa distributions, which match real weights' shape.

use std::collections::HashMap;

use df11::checkpoint::{Checkpoint, OwnedTensor, Storage, write_file};
use df11::encode::huffman;
use df11::format::{CONTAINER_HEADER_BYTES, MAX_CODE_LEN, SYMBOLS, TENSOR_HEADER_BYTES};
use df11::synth::{self, Dist, SynthParams};
use df11::{EncodeOptions, compress_with, entropy_bits, exponent_histogram};

fn params(scale: f32, dist: Dist, seed: u64) -> SynthParams {
    SynthParams::typical(scale, dist, seed)
}

/// BERT-base's tensors (110M weights): name, rows, columns and a generator.
fn bert_base() -> Vec<(String, usize, usize, Vec<u16>)> {
    let mut seed = 100;
    let mut next = || {
        seed += 1;
        seed
    };
    let mut out = Vec::new();
    let dense = |out: &mut Vec<_>, name: String, rows: usize, cols: usize, scale: f32, seed: u64| {
        let dist = if seed.is_multiple_of(3) { Dist::Laplace } else { Dist::Gaussian };
        out.push((name, rows, cols, synth::weights_with(rows, cols, &params(scale, dist, seed))));
    };
    // A LayerNorm weight: values near 1 (spread 0.05); a bias or a LayerNorm
    // bias: small values around 0.
    let gamma = |n: usize, seed: u64| -> Vec<u16> {
        let d = synth::weights_with(1, n, &params(0.05, Dist::Gaussian, seed));
        d.iter().map(|&b| half::bf16::from_f32(1.0 + half::bf16::from_bits(b).to_f32()).to_bits()).collect()
    };
    let e = "bert.embeddings";
    dense(&mut out, format!("{e}.word_embeddings.weight"), 30522, 768, 0.045, next());
    dense(&mut out, format!("{e}.position_embeddings.weight"), 512, 768, 0.02, next());
    dense(&mut out, format!("{e}.token_type_embeddings.weight"), 2, 768, 0.02, next());
    let norm = |out: &mut Vec<_>, p: String, n: usize, s1: u64, s2: u64| {
        out.push((format!("{p}.weight"), 1, n, gamma(n, s1)));
        out.push((format!("{p}.bias"), 1, n, synth::weights_with(1, n, &params(0.02, Dist::Gaussian, s2))));
    };
    norm(&mut out, format!("{e}.LayerNorm"), 768, next(), next());
    for l in 0..12 {
        let p = format!("bert.encoder.layer.{l}");
        for (m, scale) in [("query", 0.043), ("key", 0.043), ("value", 0.028)] {
            dense(&mut out, format!("{p}.attention.self.{m}.weight"), 768, 768, scale, next());
            dense(&mut out, format!("{p}.attention.self.{m}.bias"), 1, 768, 0.02, next());
        }
        dense(&mut out, format!("{p}.attention.output.dense.weight"), 768, 768, 0.027, next());
        dense(&mut out, format!("{p}.attention.output.dense.bias"), 1, 768, 0.02, next());
        norm(&mut out, format!("{p}.attention.output.LayerNorm"), 768, next(), next());
        dense(&mut out, format!("{p}.intermediate.dense.weight"), 3072, 768, 0.04, next());
        dense(&mut out, format!("{p}.intermediate.dense.bias"), 1, 3072, 0.03, next());
        dense(&mut out, format!("{p}.output.dense.weight"), 768, 3072, 0.035, next());
        dense(&mut out, format!("{p}.output.dense.bias"), 1, 768, 0.02, next());
        norm(&mut out, format!("{p}.output.LayerNorm"), 768, next(), next());
    }
    dense(&mut out, "bert.pooler.dense.weight".into(), 768, 768, 0.03, next());
    dense(&mut out, "bert.pooler.dense.bias".into(), 1, 768, 0.02, next());
    out
}

/// Bits of the optimal prefix code with lengths at most `limit` for these
/// counts (`limit` 64: Huffman's); a single symbol takes none, as in df11.
fn code_bits(counts: &[u64], limit: u32) -> u64 {
    let mut lengths = vec![0u8; counts.len()];
    huffman::lengths_into(counts, limit, &mut lengths);
    counts.iter().zip(&lengths).map(|(&c, &l)| c * l as u64).sum()
}

/// The ideal cost in bits of coding `hist` with its probabilities quantized
/// to `2^log` slots (each present symbol keeps at least one), as a tANS
/// table would.
fn tans_bits(hist: &[u64], log: u32) -> f64 {
    let total: u64 = hist.iter().sum();
    let slots = 1u64 << log;
    let mut q: Vec<u64> = hist
        .iter()
        .map(|&c| if c == 0 { 0 } else { ((c as u128 * slots as u128 / total as u128) as u64).max(1) })
        .collect();
    // Give the remainder to (or take the excess from) the largest symbol.
    let sum: u64 = q.iter().sum();
    let big = (0..q.len()).max_by_key(|&i| hist[i]).unwrap_or(0);
    q[big] = (q[big] + slots).saturating_sub(sum).max(1);
    hist.iter().zip(&q).filter(|(c, _)| **c > 0).map(|(&c, &qs)| c as f64 * (slots as f64 / qs as f64).log2()).sum()
}

fn entropy(counts: impl Iterator<Item = u64> + Clone) -> f64 {
    let total: u64 = counts.clone().sum();
    let t = total as f64;
    counts.filter(|&c| c > 0).map(|c| c as f64 / t).map(|p| -p * p.log2()).sum::<f64>() * t
}

#[derive(Default)]
struct Sums {
    n: f64,
    h: f64,
    huff12: f64,
    huff: f64,
    tans11: f64,
    tans12: f64,
    pair: f64,
    h2: f64,
    ctx1: f64,
    m6: f64,
    huff9: f64,
    huff9_12: f64,
    m5: f64,
    c256k: f64,
    c64k: f64,
    sm: f64,
}

/// The BF16 tensors of a checkpoint, as (name, rows, columns, bits): a
/// tensor of one dimension is one row; a tensor of more dimensions has its
/// last dimension as its columns.
fn bf16_tensors(path: &str) -> Vec<(String, usize, usize, Vec<u16>)> {
    let ck = Checkpoint::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    ck.tensors()
        .into_iter()
        .filter(|t| t.dtype == "BF16" && t.decoded_bytes > 0)
        .map(|t| {
            let bytes = ck.decode(&t.name).unwrap_or_else(|e| panic!("{}: {e}", t.name));
            let bits: Vec<u16> = bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
            let cols = t.shape.last().map_or(1, |&c| c.max(1) as usize);
            (t.name, bits.len() / cols, cols, bits)
        })
        .collect()
}

/// Where a df11 file's bits go beyond each tensor's `8 + H`, summed over
/// tensors.
#[derive(Default)]
struct Parts {
    stored: f64,
    raw: f64,
    huff12: f64,
    headers: f64,
    offsets: f64,
    padding: f64,
    crc_pad: f64,
}

impl Parts {
    /// A tensor of `bits` that the file stored raw or not in `bits_stored`.
    fn add(&mut self, bits: &[u16], hist: &[u64; SYMBOLS], (raw, bits_stored): (bool, f64)) {
        let n = bits.len() as f64;
        let bound = (8.0 + entropy_bits(hist)) * n;
        self.stored += bits_stored;
        if raw {
            self.raw += bits_stored - bound;
            return;
        }
        // The file's encoder is deterministic: the same container again.
        let t = compress_with(bits, &LANES);
        assert_eq!(t.serialized_len() as f64 * 8.0, bits_stored, "the container the file holds");
        let code = huffman::coded_bits(hist, &huffman::code_lengths(hist, MAX_CODE_LEN)) as f64;
        let (words, offsets) = (32.0 * t.words.len() as f64, 32.0 * t.stream_offsets.len() as f64);
        let headers = 8.0 * (CONTAINER_HEADER_BYTES + TENSOR_HEADER_BYTES) as f64;
        self.huff12 += code + 8.0 * n - bound;
        self.headers += headers;
        self.offsets += offsets;
        self.padding += words - code;
        self.crc_pad += bits_stored - headers - offsets - words - 8.0 * n;
    }
}

/// The layout whose parts the split below counts: 8-bit exponent codes and
/// one raw byte a weight.
const LANES: EncodeOptions =
    EncodeOptions { segment_rows: df11::format::DEFAULT_SEGMENT_ROWS, layout: df11::Layout::Lanes };

fn main() {
    let path = std::env::args().nth(1);
    let tensors = match &path {
        Some(p) => bf16_tensors(p),
        None => bert_base(),
    };
    let total_n: usize = tensors.iter().map(|t| t.3.len()).sum();
    let what = path.as_deref().unwrap_or("BERT-base shape (synthetic)");
    println!("{what}: {} BF16 tensors, {} weights", tensors.len(), total_n);

    // The whole file in the lanes layout, and as df11 writes it with no options.
    let owned: Vec<OwnedTensor> = tensors
        .iter()
        .map(|(name, rows, cols, bits)| {
            let shape = if *rows == 1 { vec![*cols as u64] } else { vec![*rows as u64, *cols as u64] };
            OwnedTensor::new(name.clone(), "BF16", shape, bits.iter().flat_map(|b| b.to_le_bytes()).collect())
        })
        .collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    let file_bits = |name: &str, opts: Option<EncodeOptions>| {
        let path = dir.path().join(name);
        write_file(&path, &owned, opts, None).expect("writes");
        std::fs::metadata(&path).expect("written").len() as f64 * 8.0
    };
    let (df11_bits, plain_bits) = (file_bits("df11.safetensors", Some(LANES)), file_bits("plain.safetensors", None));
    // How the df11 file stored each tensor, and in how many bytes.
    let written = Checkpoint::open(dir.path().join("df11.safetensors")).expect("opens");
    let stored: HashMap<String, (bool, f64)> = written
        .tensors()
        .into_iter()
        .map(|e| (e.name, (matches!(e.storage, Storage::Raw), e.stored_bytes as f64 * 8.0)))
        .collect();
    let mut parts = Parts::default();

    let mut s = Sums::default();
    for (name, _, cols, bits) in &tensors {
        let n = bits.len() as f64;
        let hist = exponent_histogram(bits);
        parts.add(bits, &hist, stored[name]);
        let e: Vec<usize> = bits.iter().map(|&b| ((b >> 7) & 0xFF) as usize).collect();
        let mut pairs: HashMap<u32, u64> = HashMap::new();
        for p in e.chunks(2) {
            let key = if p.len() == 2 { (p[0] << 8 | p[1]) as u32 } else { 0x1_0000 | p[0] as u32 };
            *pairs.entry(key).or_default() += 1;
        }
        // Contexts restart at each row: a decoder's segments start at rows.
        let mut ctx = vec![0u64; 257 * 256];
        for row in e.chunks(*cols) {
            let mut prev = 256;
            for &x in row {
                ctx[prev * 256 + x] += 1;
                prev = x;
            }
        }
        let ctx_h: f64 = ctx.chunks(256).map(|c| entropy(c.iter().copied())).sum();
        let (mut m6, mut m5, mut sm) = (vec![0u64; 512], vec![0u64; 1024], vec![0u64; 256]);
        for &b in bits {
            m6[((b >> 6) & 0x1FF) as usize] += 1;
            m5[((b >> 5) & 0x3FF) as usize] += 1;
            sm[((b >> 8) & 0x80 | b & 0x7F) as usize] += 1;
        }
        let h = entropy_bits(&hist) * n;
        s.n += n;
        s.h += h;
        s.huff12 += huffman::coded_bits(&hist, &huffman::code_lengths(&hist, MAX_CODE_LEN)) as f64;
        s.huff += code_bits(&hist, 64) as f64;
        s.tans11 += tans_bits(&hist, 11);
        s.tans12 += tans_bits(&hist, 12);
        s.pair += code_bits(&pairs.values().copied().collect::<Vec<_>>(), 64) as f64;
        s.h2 += entropy(pairs.values().copied());
        s.ctx1 += ctx_h;
        s.m6 += entropy(m6.iter().copied()) - n;
        for (chunk, sum) in [(1 << 18, &mut s.c256k), (1 << 16, &mut s.c64k)] {
            *sum += bits.chunks(chunk).map(|c| entropy_bits(&exponent_histogram(c)) * c.len() as f64).sum::<f64>();
        }
        s.m5 += entropy(m5.iter().copied()) - 2.0 * n;
        s.huff9 += code_bits(&m6, 64) as f64 - n;
        s.huff9_12 += code_bits(&m6, MAX_CODE_LEN) as f64 - n;
        s.sm += h + code_bits(&sm, 64) as f64 - 8.0 * n;
    }
    let bound = 8.0 + s.h / s.n;
    let per = |x: f64| (x - s.h) / s.n;
    println!(
        "whole file, --layout lanes: df11 {:.4} bits/weight, plain {:.4}, per-tensor 8+H {:.4}: df11 is {:.4} over the bound",
        df11_bits / s.n,
        plain_bits / s.n,
        bound,
        df11_bits / s.n - bound
    );
    let default_bits = file_bits("default.safetensors", Some(EncodeOptions::default()));
    println!(
        "whole file, the default ({}): {:.4} bits/weight, {:.4} over the bound",
        EncodeOptions::default().layout.name(),
        default_bits / s.n,
        default_bits / s.n - bound
    );
    let rest = df11_bits / s.n - bound - per(s.huff12);
    let stored_bits = parts.stored;
    let split = [
        ("the exponent code's redundancy (df11-stored tensors)", parts.huff12),
        ("raw-stored tensors over their bound", parts.raw),
        ("container and record headers (the code lengths mostly)", parts.headers),
        ("stream offsets", parts.offsets),
        ("lane padding to whole words", parts.padding),
        ("record CRC and padding", parts.crc_pad),
        ("the safetensors header", df11_bits - stored_bits),
    ];
    for (what, bits) in split {
        println!("  {:>7.4}  {what}", bits / s.n);
    }
    let sum: f64 = split.iter().map(|p| p.1).sum::<f64>() / s.n;
    assert!((sum - (df11_bits / s.n - bound)).abs() < 1e-9, "the parts add up to the gap");
    println!("  (everything but the code of the exponent, of all tensors: {rest:.4})");
    println!("\nexponent stream, bits/weight over H (H = {:.4}):", s.h / s.n);
    let columns = [
        ("huff12", s.huff12),
        ("huff", s.huff),
        ("tans11", s.tans11),
        ("tans12", s.tans12),
        ("pair", s.pair),
        ("H2/2", s.h2),
        ("ctx1", s.ctx1),
        ("+m6", s.m6),
        ("huff9", s.huff9),
        ("huff9/12", s.huff9_12),
        ("+m5", s.m5),
        ("c256K", s.c256k),
        ("c64K", s.c64k),
        ("sm", s.sm),
    ];
    println!("{}", columns.iter().map(|(name, _)| format!("{name:>8}")).collect::<Vec<_>>().join(" "));
    println!("{}", columns.iter().map(|&(_, bits)| format!("{:>8.4}", per(bits))).collect::<Vec<_>>().join(" "));
    println!("\nthe whole file's gap with the exponent code replaced, the rest as today:");
    let alts = [("tans12", s.tans12), ("pair", s.pair), ("huff9", s.huff9), ("huff9/12", s.huff9_12), ("+m6", s.m6)];
    for (name, bits) in alts {
        println!("{name:>8} {:>8.4}", per(bits) + rest);
    }
    // 512 four-bit code lengths instead of 256: 128 more bytes a tensor.
    let table9 = 128.0 * 8.0 * tensors.len() as f64 / s.n;
    println!("huff9/12 with its 256-byte code-length table: {:.4}", per(s.huff9_12) + rest + table9);
}

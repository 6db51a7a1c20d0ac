//! Temporary minimal encoder and weight generator so the fast decoder can be
//! tested and measured before the real encoder lands. Not part of the API.
#![allow(missing_docs)]

use crate::CompressedTensor;
use df11_gpu::bits::{exponent, sign_mantissa};
use df11_gpu::format::{LANE_RUN, LANES, ROW_ELEMS};

fn lengths(bits: &[u16]) -> [u8; 256] {
    let mut hist = [0u64; 256];
    for &b in bits {
        hist[exponent(b) as usize] += 1;
    }
    let mut syms: Vec<usize> = (0..256).filter(|&s| hist[s] > 0).collect();
    let mut len = [0u8; 256];
    if syms.len() <= 1 {
        return len;
    }
    // Crude length-limited code: Shannon lengths clamped to 1..=12, then
    // lengthened/shortened until the Kraft sum is exactly one.
    let total: u64 = hist.iter().sum();
    for &s in &syms {
        let p = hist[s] as f64 / total as f64;
        len[s] = (-p.log2()).ceil().clamp(1.0, 12.0) as u8;
    }
    let kraft = |len: &[u8; 256]| len.iter().filter(|&&l| l > 0).map(|&l| 1u32 << (12 - l)).sum::<u32>();
    syms.sort_by_key(|&s| std::cmp::Reverse(hist[s]));
    while kraft(&len) > 4096 {
        let s = *syms.iter().rev().find(|&&s| len[s] < 12).unwrap();
        len[s] += 1;
    }
    'outer: while kraft(&len) < 4096 {
        for &s in &syms {
            if len[s] > 1 && kraft(&len) + (1 << (12 - len[s])) <= 4096 {
                len[s] -= 1;
                continue 'outer;
            }
        }
        unreachable!()
    }
    len
}

pub fn encode(bits: &[u16], segment_rows: u32) -> CompressedTensor {
    let len = lengths(bits);
    let max_len = *len.iter().max().unwrap() as u32;
    let only_symbol = if max_len == 0 && !bits.is_empty() { exponent(bits[0]) } else { 0 };
    // Canonical codes.
    let mut code = [0u32; 256];
    let mut next = 0u32;
    for l in 1..=max_len {
        for s in 0..256 {
            if len[s] as u32 == l {
                code[s] = next;
                next += 1;
            }
        }
        next <<= 1;
    }
    let seg_elems = segment_rows as usize * ROW_ELEMS;
    let mut offsets = vec![0u32];
    let mut words = Vec::new();
    for seg in bits.chunks(seg_elems) {
        // Lane bit strings.
        let mut lane_words: Vec<Vec<u32>> = vec![Vec::new(); LANES];
        for (j, lw) in lane_words.iter_mut().enumerate() {
            let (mut acc, mut n) = (0u64, 0u32);
            for r in 0..seg_elems / ROW_ELEMS {
                for k in 0..LANE_RUN {
                    let i = r * ROW_ELEMS + j * LANE_RUN + k;
                    if i < seg.len() {
                        let e = exponent(seg[i]) as usize;
                        acc = acc << len[e] | code[e] as u64;
                        n += len[e] as u32;
                        if n >= 32 {
                            lw.push((acc >> (n - 32)) as u32);
                            n -= 32;
                        }
                    }
                }
            }
            if n > 0 {
                lw.push((acc << (32 - n)) as u32);
            }
        }
        let mut taken = [0usize; LANES];
        let mut nbits = [0u32; LANES];
        for r in 0..seg_elems / ROW_ELEMS {
            for k in 0..LANE_RUN {
                for j in 0..LANES {
                    let i = r * ROW_ELEMS + j * LANE_RUN + k;
                    if i < seg.len() {
                        if nbits[j] < max_len {
                            words.push(lane_words[j].get(taken[j]).copied().unwrap_or(0));
                            taken[j] += 1;
                            nbits[j] += 32;
                        }
                        nbits[j] -= len[exponent(seg[i]) as usize] as u32;
                    }
                }
            }
        }
        offsets.push(words.len() as u32);
    }
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    CompressedTensor {
        num_elements: bits.len() as u64,
        segment_rows,
        max_len: max_len as u8,
        only_symbol,
        code_lengths: len,
        data_crc: crc32c::crc32c(&bytes),
        segment_offsets: offsets,
        words,
        sign_mantissa: bits.iter().map(|&b| sign_mantissa(b)).collect(),
    }
}

/// Roughly normal weights of standard deviation `scale`, as bf16 bits.
pub fn weights(n: usize, scale: f32, seed: u64) -> Vec<u16> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next().max(1e-300), next());
            let g = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            ((g as f32 * scale).to_bits() >> 16) as u16
        })
        .collect()
}

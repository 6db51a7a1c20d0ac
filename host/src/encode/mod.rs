//! The df11 encoder.
//!
//! One pass over the input (`scan`) gathers the exponent histogram, the
//! data CRC and the sign+mantissa bytes; [`huffman`] turns the histogram into
//! a length-limited canonical code; then the segments, independent of each
//! other, are coded in parallel by the encoder of the chosen layout:
//!
//! * `warp`: the 32 lane streams interleaved word by word as a GPU warp
//!   reads them (`docs/FORMAT.md` section 7).
//! * `lanes`: each lane's stream stored whole, so that lanes decode
//!   independently (section 8).
//! * `lanes9` (the default): the lanes layout coding each exponent with the
//!   mantissa's top bit (section 12), or `lanes` for a tensor where that is
//!   smaller.
//!
//! This module concatenates the segments' words and records the stream
//! offsets.

pub mod huffman;
mod lanes;
mod scan;
mod warp;

use crate::container::{CompressedTensor, Layout, MAX_ELEMENTS, segments_for};
use df11_gpu::bits;
use df11_gpu::format::{
    CODE_LENGTH_BYTES, CODE_LENGTH_BYTES9, DEFAULT_SEGMENT_ROWS, MAX_CODE_LEN, MAX_SEGMENT_ROWS, ROW_ELEMS, SYMBOLS,
    SYMBOLS9,
};
use rayon::prelude::*;

/// Encoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Rows of 256 elements per segment, 1..=65,536. Smaller segments give the
    /// GPU more independent work on small tensors, at about 22 bits per lane of
    /// padding and one offset per segment.
    pub segment_rows: u32,
    /// How the lane streams are stored; [`Layout::default`] by default.
    /// [`Layout::Lanes9`], the default, is the smallest: a CPU core decodes
    /// it at 3.1-4.2 GB/s, and a tensor it would not make smaller (one of a few
    /// thousand weights, where its longer code-length table costs more than
    /// it saves) is written in the lanes layout instead. [`Layout::Lanes`]
    /// decodes 1.2-1.35x faster on a CPU for 0.04-0.05 bits/weight more. Both
    /// are several times faster than [`Layout::Warp`] (0.5-1.1 GB/s a core,
    /// `docs/PERFORMANCE.md` section 2), which stays for files written
    /// before (every decoder still reads them) and for whoever asks for it.
    pub layout: Layout,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { segment_rows: DEFAULT_SEGMENT_ROWS, layout: Layout::default() }
    }
}

/// Compresses a bf16 tensor with the default options.
///
/// # Panics
/// As [`compress_with`].
pub fn compress(data: &[half::bf16]) -> CompressedTensor {
    compress_bits(bytemuck::cast_slice(data))
}

/// Compresses bf16 bit patterns with the default options.
///
/// # Panics
/// As [`compress_with`].
pub fn compress_bits(bits: &[u16]) -> CompressedTensor {
    compress_with(bits, &EncodeOptions::default())
}

/// Compresses bf16 bit patterns. Deterministic: the same input and options give
/// the same tensor, whatever the thread count.
///
/// # Panics
/// If `opts.segment_rows` is outside 1..=65,536, or if the tensor exceeds the
/// format's limits (2^40 elements, 2^32 - 1 stream words: a tensor of billions
/// of elements with near-random exponents).
pub fn compress_with(bits: &[u16], opts: &EncodeOptions) -> CompressedTensor {
    compress_reusing(bits, opts, None)
}

/// [`compress_with`], writing the sign+mantissa bytes and the words into the
/// vectors of `spare` (an earlier tensor's) where their capacity suffices:
/// an encoder that compresses tensor after tensor then writes into memory
/// it already has, instead of faulting in fresh pages for each (a quarter
/// of a checkpoint compression's time, measured: docs/PERFORMANCE.md
/// section 4). The result is the same as without a spare.
///
/// # Panics
/// As [`compress_with`].
pub fn compress_reusing(bits: &[u16], opts: &EncodeOptions, spare: Option<CompressedTensor>) -> CompressedTensor {
    let (spare_sm, spare_words) = spare.map(|t| (t.sign_mantissa, t.words)).unwrap_or_default();
    compress_into_spares(bits, opts, spare_sm, spare_words, true)
}

/// [`compress_with`] in exactly the layout asked for: a lanes9 record even
/// where a lanes record would be smaller. For tests of the lanes9 decoders
/// on tensors of any kind.
#[doc(hidden)]
pub fn compress_exact(bits: &[u16], opts: &EncodeOptions) -> CompressedTensor {
    compress_into_spares(bits, opts, Vec::new(), Vec::new(), false)
}

/// [`compress_reusing`] with the spare vectors on their own; lanes9 falls
/// back to lanes where that is smaller if `fallback`.
fn compress_into_spares(
    bits: &[u16],
    opts: &EncodeOptions,
    spare_sm: Vec<u8>,
    spare_words: Vec<u32>,
    fallback: bool,
) -> CompressedTensor {
    let rows = opts.segment_rows;
    assert!((1..=MAX_SEGMENT_ROWS).contains(&rows), "segment_rows {rows} is outside 1..={MAX_SEGMENT_ROWS}");
    let n = bits.len() as u64;
    assert!(n < MAX_ELEMENTS, "{n} elements exceed the format's limit of 2^40");

    // The histogram of the layout's symbols, its code, and the raw bits.
    let mut code_lengths = [0u8; SYMBOLS9];
    let (code_bits, data_crc, sign_mantissa) = if opts.layout == Layout::Lanes9 {
        let scan::Scan9 { hist, crc, raw } = scan::scan9(bits, spare_sm);
        huffman::lengths_into(&hist[..], MAX_CODE_LEN, &mut code_lengths);
        let code_bits = huffman::coded_bits(&hist[..], &code_lengths);
        if fallback && !lanes9_pays(&hist, code_bits, n) {
            let lanes = EncodeOptions { layout: Layout::Lanes, ..*opts };
            return compress_into_spares(bits, &lanes, raw, spare_words, false);
        }
        (code_bits, crc, raw)
    } else {
        let scan::Scan { hist, crc, sign_mantissa } = scan::scan(bits, spare_sm);
        code_lengths[..SYMBOLS].copy_from_slice(&huffman::code_lengths(&hist, MAX_CODE_LEN));
        (huffman::coded_bits(&hist, &code_lengths[..SYMBOLS]), crc, sign_mantissa)
    };
    let max_len = code_lengths.iter().copied().max().unwrap_or(0);
    let only_symbol = match (max_len, bits.first()) {
        (0, Some(&b)) if opts.layout == Layout::Lanes9 => bits::symbol9(b),
        (0, Some(&b)) => bits::exponent(b) as u16,
        _ => 0,
    };

    // Each stream pads its bits to whole words: at most one word more each.
    let streams = segments_for(n, rows) as usize * opts.layout.streams_per_segment() as usize;
    let max_words = (code_bits / 32) as usize + streams;
    let (stream_offsets, words) =
        encode_segments(bits, rows, &code_lengths, max_len as u32, opts.layout, max_words, spare_words);

    CompressedTensor {
        num_elements: n,
        segment_rows: rows,
        max_len,
        only_symbol,
        code_lengths,
        data_crc,
        layout: opts.layout,
        stream_offsets,
        words,
        sign_mantissa,
    }
}

/// Whether a lanes9 record of a tensor with the 9-bit symbol histogram
/// `hist`, coded in `code_bits`, is smaller than a lanes record: its raw bit
/// fewer per element against the longer code-length table, and the 9-bit
/// code's bits against the exponent code's (the exponent histogram is the
/// 9-bit one folded in pairs). Offsets and padding are alike in both.
fn lanes9_pays(hist: &[u64; SYMBOLS9], code_bits: u64, n: u64) -> bool {
    let exps: [u64; SYMBOLS] = std::array::from_fn(|e| hist[2 * e] + hist[2 * e + 1]);
    let exp_bits = huffman::coded_bits(&exps, &huffman::code_lengths(&exps, MAX_CODE_LEN));
    let table = 8 * (CODE_LENGTH_BYTES9 - CODE_LENGTH_BYTES) as u64;
    code_bits + 7 * n + table < exp_bits + 8 * n
}

/// Stream offsets and the concatenated words of all segments, coded in parallel.
fn encode_segments(
    bits: &[u16],
    rows: u32,
    code_lengths: &[u8; SYMBOLS9],
    max_len: u32,
    layout: Layout,
    max_words: usize,
    mut spare: Vec<u32>,
) -> (Vec<u32>, Vec<u32>) {
    let num_streams = segments_for(bits.len() as u64, rows) as usize * layout.streams_per_segment() as usize;
    if max_len == 0 {
        return (vec![0u32; num_streams + 1], Vec::new());
    }
    let lengths8: &[u8; SYMBOLS] = code_lengths[..SYMBOLS].try_into().expect("256 lengths");
    let codes = huffman::canonical_codes(lengths8);
    let seg_elems = ROW_ELEMS * rows as usize;
    // Each run of segments: its words, and the word count of each stream.
    let parts: Vec<(Vec<u32>, Vec<u32>)> = match layout {
        Layout::Warp => {
            let enc = warp::CodeTable::new(lengths8, &codes);
            bits.par_chunks(seg_elems)
                .map_init(warp::Scratch::default, |scratch, seg| {
                    let w = warp::encode_segment(seg, &enc, max_len, scratch);
                    let len = w.len() as u32;
                    (w, vec![len])
                })
                .collect()
        }
        Layout::Lanes | Layout::Lanes9 => {
            let enc = if layout == Layout::Lanes9 {
                lanes::CodeTable::new9(code_lengths, &huffman::canonical_codes(code_lengths), bits.len())
            } else {
                lanes::CodeTable::new(lengths8, &codes, bits.len())
            };
            let step = |(mut sc, mut words, mut lens): (lanes::Scratch, Vec<u32>, Vec<u32>), seg| {
                lanes::encode_segment(seg, &enc, max_len, &mut sc, &mut words, &mut lens);
                (sc, words, lens)
            };
            let strip = |(_, words, lens)| (words, lens);
            if rayon::current_num_threads() == 1 {
                // One vector, sized once: nothing to concatenate.
                let streams = Vec::with_capacity(num_streams);
                let words = match std::mem::take(&mut spare) {
                    mut s if s.capacity() >= max_words => {
                        s.clear();
                        s
                    }
                    _ => crate::hint::huge_vec(max_words),
                };
                let init = (lanes::Scratch::new(), words, streams);
                vec![strip(bits.chunks(seg_elems).fold(init, step))]
            } else {
                // Consecutive segments append to one vector, so that few
                // parts are left to concatenate.
                // Each part starts with room for its thread's share of the
                // words (address space only, until written), in 2 MiB pages.
                let share = max_words / rayon::current_num_threads();
                let init = || (lanes::Scratch::new(), crate::hint::huge_vec(share), Vec::new());
                bits.par_chunks(seg_elems).fold(init, step).map(strip).collect()
            }
        }
    };
    let total: usize = parts.iter().map(|s| s.0.len()).sum();
    assert!(total <= u32::MAX as usize, "{total} stream words exceed the format's limit of 2^32 - 1");
    let mut offsets = Vec::with_capacity(num_streams + 1);
    offsets.push(0u32);
    let mut at = 0u32;
    for (_, lens) in &parts {
        offsets.extend(lens.iter().map(|&l| {
            at += l;
            at
        }));
    }
    if parts.len() == 1 {
        let mut words = parts.into_iter().next().map(|p| p.0).unwrap_or_default();
        if words.capacity() < spare.capacity() {
            // The warp layout's one segment, or the lanes layout's one
            // thread given a spare too small: keep the larger vector.
            let mut s = spare;
            s.clear();
            s.extend_from_slice(&words);
            words = s;
        }
        return (offsets, words);
    }
    if spare.capacity() >= total {
        // Memory already faulted in: one sequential copy.
        let mut words = spare;
        words.clear();
        for (w, _) in &parts {
            words.extend_from_slice(w);
        }
        return (offsets, words);
    }
    // The parts are copied in parallel into one zeroed allocation (fresh
    // pages: nothing is written twice).
    let mut words = vec![0u32; total];
    crate::hint::huge_pages(&mut words);
    let mut dests = Vec::with_capacity(parts.len());
    let mut rest = words.as_mut_slice();
    for (w, _) in &parts {
        let (d, r) = rest.split_at_mut(w.len());
        dests.push(d);
        rest = r;
    }
    dests.into_par_iter().zip(&parts).for_each(|(d, (w, _))| d.copy_from_slice(w));
    (offsets, words)
}

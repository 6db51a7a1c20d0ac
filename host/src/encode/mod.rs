//! The df11 encoder: exponent histogram, length-limited canonical code, and the
//! per-segment lane streams interleaved exactly as `docs/FORMAT.md` section 7
//! prescribes.

pub mod huffman;

use crate::container::{CompressedTensor, MAX_ELEMENTS, data_crc, segments_for};
use crate::stats::exponent_histogram;
use df11_gpu::bits;
use df11_gpu::format::{DEFAULT_SEGMENT_ROWS, LANE_RUN, LANES, MAX_CODE_LEN, MAX_SEGMENT_ROWS, ROW_ELEMS, SYMBOLS};
use rayon::prelude::*;

/// Encoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Rows of 256 elements per segment, 1..=65,536. Smaller segments give the
    /// GPU more independent work on small tensors, at about 22 bits per lane of
    /// padding and one offset per segment.
    pub segment_rows: u32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { segment_rows: DEFAULT_SEGMENT_ROWS }
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
    let rows = opts.segment_rows;
    assert!((1..=MAX_SEGMENT_ROWS).contains(&rows), "segment_rows {rows} is outside 1..={MAX_SEGMENT_ROWS}");
    let n = bits.len() as u64;
    assert!(n < MAX_ELEMENTS, "{n} elements exceed the format's limit of 2^40");

    let hist = exponent_histogram(bits);
    let code_lengths = huffman::code_lengths(&hist, MAX_CODE_LEN);
    let max_len = code_lengths.iter().copied().max().unwrap_or(0);
    let only_symbol = match (max_len, bits.first()) {
        (0, Some(&b)) => bits::exponent(b),
        _ => 0,
    };

    // The checksum is one sequential pass; it overlaps the parallel coding.
    let (data_crc, (sign_mantissa, (segment_offsets, words))) = rayon::join(
        || data_crc(bits),
        || (split_sign_mantissa(bits), encode_segments(bits, rows, &code_lengths, max_len as u32)),
    );

    CompressedTensor {
        num_elements: n,
        segment_rows: rows,
        max_len,
        only_symbol,
        code_lengths,
        data_crc,
        segment_offsets,
        words,
        sign_mantissa,
    }
}

/// The raw sign+mantissa byte of every element.
fn split_sign_mantissa(bits: &[u16]) -> Vec<u8> {
    const CHUNK: usize = 1 << 16;
    let mut sign_mantissa = vec![0u8; bits.len()];
    sign_mantissa.par_chunks_mut(CHUNK).zip(bits.par_chunks(CHUNK)).for_each(|(out, inp)| {
        for (o, &b) in out.iter_mut().zip(inp) {
            *o = bits::sign_mantissa(b);
        }
    });
    sign_mantissa
}

/// Segment offsets and the concatenated words of all segments, coded in parallel.
fn encode_segments(bits: &[u16], rows: u32, code_lengths: &[u8; SYMBOLS], max_len: u32) -> (Vec<u32>, Vec<u32>) {
    let num_segments = segments_for(bits.len() as u64, rows) as usize;
    if max_len == 0 {
        return (vec![0u32; num_segments + 1], Vec::new());
    }
    let codes = huffman::canonical_codes(code_lengths);
    let enc = EncodeTable::new(code_lengths, &codes);
    let streams: Vec<Vec<u32>> = bits
        .par_chunks(ROW_ELEMS * rows as usize)
        .map_init(LaneScratch::new, |scratch, seg| encode_segment(seg, &enc, max_len, scratch))
        .collect();
    let total: usize = streams.iter().map(Vec::len).sum();
    assert!(total <= u32::MAX as usize, "{total} stream words exceed the format's limit of 2^32 - 1");
    let mut offsets = Vec::with_capacity(num_segments + 1);
    let mut words = Vec::with_capacity(total);
    offsets.push(0u32);
    for s in &streams {
        words.extend_from_slice(s);
        offsets.push(words.len() as u32);
    }
    (offsets, words)
}

/// Per exponent: `code << 8 | len`.
struct EncodeTable([u32; SYMBOLS]);

impl EncodeTable {
    fn new(lengths: &[u8; SYMBOLS], codes: &[u32; SYMBOLS]) -> Self {
        let mut t = [0u32; SYMBOLS];
        for s in 0..SYMBOLS {
            t[s] = codes[s] << 8 | lengths[s] as u32;
        }
        EncodeTable(t)
    }
}

/// Buffers reused across the segments one worker encodes.
struct LaneScratch {
    /// Each lane's bit string cut into words: lane `j` owns
    /// `lane_words[j * cap .. (j + 1) * cap]` while a segment is encoded.
    lane_words: Vec<u32>,
    /// Lane of each refill, in the order the decoder performs them.
    refills: Vec<u8>,
}

impl LaneScratch {
    fn new() -> Self {
        LaneScratch { lane_words: Vec::new(), refills: Vec::new() }
    }
}

/// Encodes one segment (up to `256·R` elements) into its interleaved words.
///
/// Lane by lane within each row, branch-free: the refill decisions and the
/// word boundaries are data dependent and would be mispredicted often.
/// Refills are recorded as one bit mask per step `k` and put in the decoder's
/// (k, lane) order after the row.
fn encode_segment(seg: &[u16], enc: &EncodeTable, max_len: u32, sc: &mut LaneScratch) -> Vec<u32> {
    // A lane's bits are at most rows·8·max_len; slot 0 is scratch (see `encode_run`).
    let rows = seg.len().div_ceil(ROW_ELEMS);
    let cap = (rows * LANE_RUN * max_len as usize).div_ceil(32) + 2;
    // Only written words are ever read, so stale contents need no clearing.
    if sc.lane_words.len() < cap * LANES {
        sc.lane_words.resize(cap * LANES, 0);
    }
    sc.refills.clear();
    let mut lanes = [LaneState { acc: 0, written: 0, blocks: 0 }; LANES];
    for row in seg.chunks(ROW_ELEMS) {
        let mut masks = [0u32; LANE_RUN];
        // Full runs as arrays, so the common case compiles to a fixed 8-step loop;
        // only a tensor's last row can have a partial run (`tail`) and empty lanes.
        let (runs, tail) = row.as_chunks::<LANE_RUN>();
        for (j, st) in lanes.iter_mut().enumerate() {
            let words = &mut sc.lane_words[j * cap..(j + 1) * cap];
            match runs.get(j) {
                Some(run) => st.encode_run(run, j, enc, max_len, words, &mut masks),
                None if j == runs.len() => st.encode_run(tail, j, enc, max_len, words, &mut masks),
                None => break,
            }
        }
        for mut m in masks {
            while m != 0 {
                sc.refills.push(m.trailing_zeros() as u8);
                m &= m - 1;
            }
        }
    }
    // Lane j's words are now in slots 1..=len[j] of its part of `lane_words`.
    let mut len = [0usize; LANES];
    for (j, st) in lanes.iter().enumerate() {
        let (full, rest) = ((st.written / 32) as usize, st.written % 32);
        len[j] = full;
        if rest > 0 {
            sc.lane_words[j * cap + full + 1] = (st.acc << (32 - rest)) as u32;
            len[j] += 1;
        }
    }
    // Place each lane's words where the decoder fetches them; refills past the
    // end of a lane's bits read zero words.
    let mut next = [0usize; LANES];
    let out = sc
        .refills
        .iter()
        .map(|&j| {
            let j = j as usize;
            let w = if next[j] < len[j] { sc.lane_words[j * cap + 1 + next[j]] } else { 0 };
            next[j] += 1;
            w
        })
        .collect();
    debug_assert!((0..LANES).all(|j| next[j] >= len[j]), "every lane word is fetched");
    out
}

/// One lane's encoder state, carried from row to row.
#[derive(Clone, Copy)]
struct LaneState {
    /// The lane's most recent code bits, in the low bits (at least the last 43).
    acc: u64,
    /// Bits of the lane's stream so far: the bits the decoder has consumed.
    written: u32,
    /// `(written + max_len - 1) / 32` at the last refill decision, plus one; the
    /// decoder has then loaded `32 · (blocks)` bits (see `encode_run`).
    blocks: u32,
}

impl LaneState {
    /// Encodes lane `j`'s run of one row (steps k = 0.., one element each).
    #[inline(always)]
    fn encode_run(
        &mut self,
        run: &[u16],
        j: usize,
        enc: &EncodeTable,
        max_len: u32,
        words: &mut [u32],
        masks: &mut [u32; LANE_RUN],
    ) {
        for (k, &b) in run.iter().enumerate() {
            // FORMAT.md section 7 refills when `loaded - written < max_len`. As
            // codes are at most `max_len` bits, that keeps `loaded` the smallest
            // multiple of 32 that is at least `written + max_len`, so a refill
            // happens exactly when `written + max_len - 1` enters a new 32-bit
            // block. This needs no separate `loaded` dependency chain, and it
            // depends only on code lengths, so the word order is fixed before
            // the words' contents are known.
            let blocks = (self.written + max_len - 1) / 32 + 1;
            masks[k] |= (blocks - self.blocks) << j;
            self.blocks = blocks;
            let e = enc.0[bits::exponent(b) as usize];
            let (code, l) = (e >> 8, e & 0xff);
            self.acc = (self.acc << l) | code as u64;
            self.written += l;
            // The low 32 bits of `acc >> (written % 32)` are the last complete
            // word, `written / 32` (1-based; slot 0 takes the store made before
            // any word is complete). Rewriting it with the same value until the
            // next word completes is cheaper than a branch.
            words[(self.written / 32) as usize] = (self.acc >> (self.written % 32)) as u32;
        }
    }
}

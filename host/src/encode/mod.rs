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

    let mut sign_mantissa = vec![0u8; bits.len()];
    const CHUNK: usize = 1 << 16;
    sign_mantissa.par_chunks_mut(CHUNK).zip(bits.par_chunks(CHUNK)).for_each(|(out, inp)| {
        for (o, &b) in out.iter_mut().zip(inp) {
            *o = bits::sign_mantissa(b);
        }
    });

    let num_segments = segments_for(n, rows) as usize;
    let seg_elems = ROW_ELEMS * rows as usize;
    let (segment_offsets, words) = if max_len == 0 {
        (vec![0u32; num_segments + 1], Vec::new())
    } else {
        let codes = huffman::canonical_codes(&code_lengths);
        let enc = EncodeTable::new(&code_lengths, &codes);
        let streams: Vec<Vec<u32>> = bits
            .par_chunks(seg_elems)
            .map_init(LaneScratch::new, |scratch, seg| encode_segment(seg, &enc, max_len as u32, scratch))
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
    };

    CompressedTensor {
        num_elements: n,
        segment_rows: rows,
        max_len,
        only_symbol,
        code_lengths,
        data_crc: data_crc(bits),
        segment_offsets,
        words,
        sign_mantissa,
    }
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

/// Per-lane state reused across the segments one worker encodes.
struct LaneScratch {
    /// Pending code bits of each lane, in the low `acc_bits` bits.
    acc: [u64; LANES],
    acc_bits: [u32; LANES],
    /// Each lane's bit string cut into words.
    lane_words: [Vec<u32>; LANES],
    /// The decoder's `nbits_j` (FORMAT.md section 7), simulated from code lengths.
    dec_bits: [u32; LANES],
    /// Lane of each refill, in the order the decoder performs them.
    refills: Vec<u8>,
}

impl LaneScratch {
    fn new() -> Self {
        LaneScratch {
            acc: [0; LANES],
            acc_bits: [0; LANES],
            lane_words: std::array::from_fn(|_| Vec::new()),
            dec_bits: [0; LANES],
            refills: Vec::new(),
        }
    }

    #[inline(always)]
    fn put(&mut self, j: usize, b: u16, enc: &EncodeTable, max_len: u32) {
        let e = enc.0[bits::exponent(b) as usize];
        let (code, len) = (e >> 8, e & 0xff);
        // The refill rule depends only on code lengths, so the word order can be
        // fixed here, before the words' contents are known.
        if self.dec_bits[j] < max_len {
            self.dec_bits[j] += 32;
            self.refills.push(j as u8);
        }
        self.dec_bits[j] -= len;
        // acc holds at most 31 + 12 bits; bits above acc_bits are stale and are
        // cut off by the u32 conversion below.
        let acc = (self.acc[j] << len) | code as u64;
        let nb = self.acc_bits[j] + len;
        if nb >= 32 {
            self.lane_words[j].push((acc >> (nb - 32)) as u32);
            self.acc_bits[j] = nb - 32;
        } else {
            self.acc_bits[j] = nb;
        }
        self.acc[j] = acc;
    }
}

/// Encodes one segment (up to `256·R` elements) into its interleaved words.
fn encode_segment(seg: &[u16], enc: &EncodeTable, max_len: u32, sc: &mut LaneScratch) -> Vec<u32> {
    sc.acc = [0; LANES];
    sc.acc_bits = [0; LANES];
    sc.dec_bits = [0; LANES];
    sc.refills.clear();
    for w in &mut sc.lane_words {
        w.clear();
    }
    for row in seg.chunks(ROW_ELEMS) {
        if let Ok(row) = <&[u16; ROW_ELEMS]>::try_from(row) {
            for k in 0..LANE_RUN {
                for j in 0..LANES {
                    sc.put(j, row[LANE_RUN * j + k], enc, max_len);
                }
            }
        } else {
            // The tensor's partial last row: slots past its end are invalid.
            for k in 0..LANE_RUN {
                for j in 0..LANES {
                    if let Some(&b) = row.get(LANE_RUN * j + k) {
                        sc.put(j, b, enc, max_len);
                    }
                }
            }
        }
    }
    for j in 0..LANES {
        let nb = sc.acc_bits[j];
        if nb > 0 {
            sc.lane_words[j].push((sc.acc[j] << (32 - nb)) as u32);
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
            let w = sc.lane_words[j].get(next[j]).copied().unwrap_or(0);
            next[j] += 1;
            w
        })
        .collect();
    debug_assert!((0..LANES).all(|j| next[j] >= sc.lane_words[j].len()), "every lane word is fetched");
    out
}

//! Reading checkpoints written by the DFloat11 reference implementation.
//!
//! A DFloat11 module stores its concatenated bf16 weights as six arrays (LUTs,
//! a Huffman bit stream of exponents, raw sign/mantissa bytes, per-block output
//! positions, per-thread gaps, split positions). [`decode_module`] turns them
//! back into the bf16 bit patterns, bit-exactly, rejecting anything malformed.
//! [`config`] maps modules to weight names and shapes.

pub mod code;
pub mod config;
pub mod patterns;
mod regex;
pub mod write;

use rayon::prelude::*;

/// The six arrays of one compressed module, as stored bytes.
#[derive(Clone, Copy, Debug)]
pub struct ModuleArrays<'a> {
    /// `luts`: R rows of 256 bytes; row R-1 holds code lengths.
    pub luts: &'a [u8],
    /// `encoded_exponent`: the MSB-first Huffman stream.
    pub encoded_exponent: &'a [u8],
    /// `sign_mantissa`: one byte per element.
    pub sign_mantissa: &'a [u8],
    /// `output_positions`: little-endian `u32`s stored as bytes.
    pub output_positions: &'a [u8],
    /// `gaps`: packed 5-bit start offsets, one per thread window.
    pub gaps: &'a [u8],
    /// `split_positions`: little-endian `i64`s stored as bytes.
    pub split_positions: &'a [u8],
}

/// The names of the six arrays, as suffixes of the module name.
pub const ARRAY_NAMES: [&str; 6] =
    ["luts", "encoded_exponent", "sign_mantissa", "output_positions", "gaps", "split_positions"];

/// Why a module could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

fn fail<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// Bits per block: 512 threads × 8 bytes. Fixed by the DFloat11 kernel.
pub(crate) const BLOCK_BITS: u64 = 512 * 64;
pub(crate) const BLOCK_BYTES: usize = 4096;
pub(crate) const THREADS_PER_BLOCK: usize = 512;
/// LUT entries at or above this are pointers to sub-tables.
pub(crate) const POINTER_MIN: u8 = 240;

/// A decoded module: the concatenated bf16 bit patterns and where each weight ends.
#[derive(Debug)]
pub struct Decoded {
    /// All weights of the module, concatenated, as bf16 bits.
    pub bits: Vec<u16>,
    /// Element ranges of the weights, in concatenation order.
    pub pieces: Vec<std::ops::Range<usize>>,
}

/// Decodes one module bit-exactly.
///
/// Blocks are decoded in parallel from their stored start (`gap` of the block's
/// first thread, `output_positions`); each block must end exactly where the
/// next non-empty one starts and the last must end in the stream's last byte,
/// which makes the result identical to a sequential decode from bit 0 and
/// catches corrupt gaps or positions instead of emitting wrong weights.
pub fn decode_module(a: &ModuleArrays) -> Result<Decoded, DecodeError> {
    let luts = a.luts;
    if luts.is_empty() || !luts.len().is_multiple_of(256) {
        return fail(format!("luts has {} bytes, not a non-zero multiple of 256", luts.len()));
    }
    let rows = luts.len() / 256;
    if rows < 2 {
        return fail("luts needs at least the root row and the length row");
    }
    let subtables = rows - 2;
    let n = a.sign_mantissa.len();
    if n > u32::MAX as usize {
        return fail(format!("{n} elements is more than DFloat11's u32 positions allow"));
    }
    let stream = a.encoded_exponent;
    let b = stream.len();
    let n_blocks = b.div_ceil(BLOCK_BYTES);
    if n > 0 && b == 0 {
        return fail("encoded_exponent is empty but there are elements to decode");
    }
    if a.gaps.len() != 320 * n_blocks {
        return fail(format!("gaps has {} bytes, expected {} for {n_blocks} blocks", a.gaps.len(), 320 * n_blocks));
    }
    if !a.output_positions.len().is_multiple_of(4) {
        return fail(format!("output_positions has {} bytes, not whole u32s", a.output_positions.len()));
    }
    let mut pos: Vec<usize> =
        a.output_positions.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as usize).collect();
    // The encoder omits the final entry when the last code ends exactly on a
    // block boundary that it then crosses (edge case E2): it is N.
    if pos.len() == n_blocks {
        pos.push(n);
    }
    if pos.len() != n_blocks + 1 {
        return fail(format!("output_positions has {} entries, expected {} or {}", pos.len(), n_blocks, n_blocks + 1));
    }
    if n_blocks > 0 && pos[0] != 0 {
        return fail("output_positions does not start at 0");
    }
    if pos.windows(2).any(|w| w[0] > w[1]) || pos.last().is_some_and(|&l| l != n) {
        return fail("output_positions is not non-decreasing up to the element count");
    }
    let gap = |t: usize| -> u64 {
        let bit = 5 * t;
        let hi = a.gaps[bit / 8] as u32;
        let lo = a.gaps.get(bit / 8 + 1).copied().unwrap_or(0) as u32;
        (((hi << 8 | lo) >> (11 - bit % 8)) & 31) as u64
    };
    let lengths = &luts[(rows - 1) * 256..];
    let table = Table { luts, lengths, subtables, stream };

    // Cut the output into the disjoint slices each block writes.
    let mut bits = vec![0u16; n];
    let mut slices = Vec::with_capacity(n_blocks);
    let mut rest = bits.as_mut_slice();
    for blk in 0..n_blocks {
        let (mine, tail) = rest.split_at_mut(pos[blk + 1] - pos[blk]);
        rest = tail;
        slices.push((blk, mine));
    }
    let ends: Vec<Option<u64>> = slices
        .into_par_iter()
        .map(|(blk, out)| {
            if out.is_empty() {
                return Ok(None);
            }
            let start = blk as u64 * BLOCK_BITS + gap(blk * THREADS_PER_BLOCK);
            let sm = &a.sign_mantissa[pos[blk]..pos[blk + 1]];
            table.decode_run(start, out, sm).map(Some).map_err(|m| DecodeError(format!("block {blk}: {m}")))
        })
        .collect::<Result<_, _>>()?;
    // Chain check: each non-empty block ends where the next one starts.
    let mut expect = 0u64;
    for (blk, end) in ends.iter().enumerate() {
        if let Some(end) = end {
            let start = blk as u64 * BLOCK_BITS + gap(blk * THREADS_PER_BLOCK);
            if start != expect {
                return fail(format!("block {blk} starts at bit {start} but the previous code ends at bit {expect}"));
            }
            expect = *end;
        }
    }
    if expect.div_ceil(8) != b as u64 {
        return fail(format!("the codes end at bit {expect}, but the stream has {b} bytes"));
    }
    let pieces = split(a.split_positions, n)?;
    Ok(Decoded { bits, pieces })
}

struct Table<'a> {
    luts: &'a [u8],
    lengths: &'a [u8],
    subtables: usize,
    stream: &'a [u8],
}

impl Table<'_> {
    /// The 32 stream bits starting at bit `p`, MSB first; bytes past the end read as 0.
    #[inline]
    fn peek32(&self, p: u64) -> u32 {
        let i = (p / 8) as usize;
        let shift = (p % 8) as u32;
        let window = if let Some(chunk) = self.stream.get(i..i + 8) {
            u64::from_be_bytes(chunk.try_into().unwrap())
        } else {
            let mut buf = [0u8; 8];
            let avail = self.stream.len().saturating_sub(i).min(8);
            buf[..avail].copy_from_slice(&self.stream[i.min(self.stream.len())..i.min(self.stream.len()) + avail]);
            u64::from_be_bytes(buf)
        };
        ((window << shift) >> 32) as u32
    }

    /// Decodes `out.len()` symbols from bit `p`, joining them with `sm`; returns the end bit.
    fn decode_run(&self, mut p: u64, out: &mut [u16], sm: &[u8]) -> Result<u64, String> {
        let total_bits = self.stream.len() as u64 * 8;
        for (o, &s) in out.iter_mut().zip(sm) {
            let w = self.peek32(p);
            let mut v = self.luts[(w >> 24) as usize];
            let mut level = 1;
            while v >= POINTER_MIN {
                let row = 256 - v as usize;
                if level > 3 || row > self.subtables {
                    return Err(format!("bad LUT pointer {v} at bit {p}"));
                }
                let byte = (w >> (24 - 8 * level)) & 0xFF;
                v = self.luts[row * 256 + byte as usize];
                level += 1;
            }
            let len = self.lengths[v as usize] as u64;
            if len == 0 || len > 32 {
                return Err(format!("symbol {v} at bit {p} has code length {len}"));
            }
            p += len;
            if p > total_bits {
                return Err(format!("code at bit {} runs past the end of the stream", p - len));
            }
            *o = ((s as u16 & 0x80) << 8) | ((v as u16) << 7) | (s as u16 & 0x7F);
        }
        Ok(p)
    }
}

fn split(raw: &[u8], n: usize) -> Result<Vec<std::ops::Range<usize>>, DecodeError> {
    if !raw.len().is_multiple_of(8) {
        return fail(format!("split_positions has {} bytes, not whole i64s", raw.len()));
    }
    let mut pieces = Vec::new();
    let mut prev = 0usize;
    for c in raw.chunks_exact(8) {
        let v = i64::from_le_bytes(c.try_into().unwrap());
        if v < prev as i64 || v as u64 > n as u64 {
            return fail(format!("split_positions entry {v} is out of order or beyond {n} elements"));
        }
        pieces.push(prev..v as usize);
        prev = v as usize;
    }
    pieces.push(prev..n);
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-symbol code: exponent 127 = `0`, exponent 128 = `1`.
    fn tiny_luts() -> Vec<u8> {
        let mut luts = vec![0u8; 512];
        luts[..128].fill(127);
        luts[128..256].fill(128);
        luts[256 + 127] = 1;
        luts[256 + 128] = 1;
        luts
    }

    fn arrays<'a>(luts: &'a [u8], stream: &'a [u8], sm: &'a [u8], pos: &'a [u8], gaps: &'a [u8]) -> ModuleArrays<'a> {
        ModuleArrays {
            luts,
            encoded_exponent: stream,
            sign_mantissa: sm,
            output_positions: pos,
            gaps,
            split_positions: &[],
        }
    }

    #[test]
    fn decodes_a_hand_built_stream() {
        let luts = tiny_luts();
        let pos: Vec<u8> = [0u32, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let gaps = vec![0u8; 320];
        // Symbols 128, 127, 128 -> bits 101, then padding.
        let d = decode_module(&arrays(&luts, &[0b1010_0000], &[0x00, 0x81, 0x7F], &pos, &gaps)).unwrap();
        assert_eq!(d.bits, vec![0x4000, 0xBF81, 0x407F]);
        assert_eq!(d.pieces, vec![0..3]);
    }

    #[test]
    fn rejects_corruption() {
        let luts = tiny_luts();
        let pos: Vec<u8> = [0u32, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let gaps = vec![0u8; 320];
        let sm = [0u8; 3];
        // A pointer into the length row.
        let mut bad = luts.clone();
        bad[0xA0] = 255;
        assert!(decode_module(&arrays(&bad, &[0xA0], &sm, &pos, &gaps)).is_err());
        // A zero code length.
        let mut bad = luts.clone();
        bad[256 + 128] = 0;
        assert!(decode_module(&arrays(&bad, &[0xA0], &sm, &pos, &gaps)).is_err());
        // A stream with a trailing byte no code reaches.
        assert!(decode_module(&arrays(&luts, &[0xA0, 0], &sm, &pos, &gaps)).is_err());
        // Wrong gaps length, a gap that moves the start.
        assert!(decode_module(&arrays(&luts, &[0xA0], &sm, &pos, &gaps[1..])).is_err());
        let mut g = gaps.clone();
        g[0] = 0x08;
        assert!(decode_module(&arrays(&luts, &[0xA0], &sm, &pos, &g)).is_err());
        // Positions that do not end at N.
        let short: Vec<u8> = [0u32, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(decode_module(&arrays(&luts, &[0xA0], &sm, &short, &gaps)).is_err());
        // Not whole LUT rows.
        assert!(decode_module(&arrays(&luts[..300], &[0xA0], &sm, &pos, &gaps)).is_err());
    }

    #[test]
    fn splits_by_positions() {
        let raw: Vec<u8> = [2i64, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(split(&raw, 7).unwrap(), vec![0..2, 2..5, 5..7]);
        let raw: Vec<u8> = [5i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(split(&raw, 7).is_err());
        assert!(split(&raw[..3], 7).is_err());
    }
}

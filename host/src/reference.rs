//! The reference decoder: small, slow and obviously correct.
//!
//! It follows `docs/FORMAT.md` sections 7, 8 and 12 literally, decodes canonical
//! codes one bit at a time from `first_code`/`count` per length, and shares
//! nothing with the fast decoders (in particular not `df11_gpu::table`), so it
//! can judge them.

use crate::container::{CompressedTensor, Layout, data_crc};
use crate::error::{Error, Result};
use df11_gpu::bits;
use df11_gpu::format::{LANE_RUN, LANES, ROW_ELEMS};

/// Decodes `t` into a new buffer of bf16 bit patterns.
pub fn decode_reference(t: &CompressedTensor) -> Result<Vec<u16>> {
    // Validate before allocating: N is then backed by N sign+mantissa bytes.
    t.validate()?;
    let mut out = vec![0u16; t.num_elements as usize];
    decode_reference_into(t, &mut out)?;
    Ok(out)
}

/// Decodes `t` into `out`, which must hold exactly N elements. On error the
/// contents of `out` are unspecified.
pub fn decode_reference_into(t: &CompressedTensor, out: &mut [u16]) -> Result<()> {
    t.validate()?;
    if out.len() as u64 != t.num_elements {
        return Err(Error::OutputLength { expected: t.num_elements, actual: out.len() as u64 });
    }
    let code = Canonical::new(t);
    match t.layout {
        Layout::Warp => decode_warp(t, &code, out)?,
        Layout::Lanes => decode_lanes(t, &code, out, |elem, symbol| bits::join(symbol as u8, t.sign_mantissa[elem]))?,
        Layout::Lanes9 => {
            let n = t.num_elements as usize;
            decode_lanes(t, &code, out, |elem, symbol| bits::join9(symbol, raw9(&t.sign_mantissa, n, elem)))?
        }
    }
    let computed = data_crc(out);
    if computed != t.data_crc {
        return Err(Error::Checksum { what: "data", stored: t.data_crc, computed });
    }
    Ok(())
}

/// The warp layout (FORMAT.md section 7): one word cursor per segment, lanes
/// refilling in step order.
fn decode_warp(t: &CompressedTensor, code: &Canonical, out: &mut [u16]) -> Result<()> {
    let n = out.len();
    let max_len = t.max_len as u32;
    let seg_elems = t.segment_elems() as usize;
    for s in 0..t.num_segments() as usize {
        let corrupt = Error::CorruptStream { segment: s as u64 };
        let mut cursor = t.stream_offsets[s] as usize;
        let end = t.stream_offsets[s + 1] as usize;
        let mut buf = [0u64; LANES];
        let mut nbits = [0u32; LANES];
        let base = s * seg_elems;
        let rows = (n - base).min(seg_elems).div_ceil(ROW_ELEMS);
        for r in 0..rows {
            for k in 0..LANE_RUN {
                for j in 0..LANES {
                    let elem = base + ROW_ELEMS * r + LANE_RUN * j + k;
                    if elem >= n {
                        continue;
                    }
                    if nbits[j] < max_len {
                        if cursor >= end {
                            return Err(corrupt);
                        }
                        buf[j] |= (t.words[cursor] as u64) << (32 - nbits[j]);
                        cursor += 1;
                        nbits[j] += 32;
                    }
                    let (symbol, len) = code.decode(buf[j]).ok_or(corrupt.clone())?;
                    buf[j] <<= len;
                    nbits[j] -= len;
                    out[elem] = bits::join(symbol as u8, t.sign_mantissa[elem]);
                }
            }
        }
        if cursor != end {
            return Err(corrupt);
        }
    }
    Ok(())
}

/// The lanes and lanes9 layouts (FORMAT.md sections 8 and 12): each lane's
/// stream on its own, read bit by bit; it must end within its last word,
/// followed only by zero bits. `join(elem, symbol)` makes element `elem`.
fn decode_lanes(
    t: &CompressedTensor,
    code: &Canonical,
    out: &mut [u16],
    join: impl Fn(usize, u16) -> u16,
) -> Result<()> {
    let n = out.len();
    let seg_elems = t.segment_elems() as usize;
    for s in 0..t.num_segments() as usize {
        let corrupt = Error::CorruptStream { segment: s as u64 };
        let base = s * seg_elems;
        let seg_len = (n - base).min(seg_elems);
        for j in 0..LANES {
            let words =
                &t.words[t.stream_offsets[LANES * s + j] as usize..t.stream_offsets[LANES * s + j + 1] as usize];
            // The stream's bytes in order are the words' little-endian bytes.
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let bit = |p: usize| bytes.get(p / 8).map_or(0, |&b| (b >> (7 - p % 8)) as u64 & 1);
            let total = 8 * bytes.len();
            let mut pos = 0;
            for r in 0..seg_len.div_ceil(ROW_ELEMS) {
                for k in 0..LANE_RUN {
                    let elem = base + ROW_ELEMS * r + LANE_RUN * j + k;
                    if elem >= base + seg_len {
                        continue;
                    }
                    // The next 12 bits, zeros past the end, at the top of a u64.
                    let peek = (0..12).fold(0u64, |acc, i| acc | bit(pos + i) << (63 - i));
                    let (symbol, len) = code.decode(peek).ok_or(corrupt.clone())?;
                    pos += len as usize;
                    if pos > total {
                        return Err(corrupt);
                    }
                    out[elem] = join(elem, symbol);
                }
            }
            // Exactly the words the bits need, and nothing but zeros after them.
            if bytes.len() != pos.div_ceil(32) * 4 || (pos..total).any(|p| bit(p) != 0) {
                return Err(corrupt);
            }
        }
    }
    Ok(())
}

/// A canonical code described per length, DEFLATE style.
struct Canonical {
    max_len: u32,
    only_symbol: u16,
    /// Code value of the first code of each length.
    first_code: [u32; 13],
    /// Codes of each length.
    count: [u32; 13],
    /// Index in `symbols` of the first symbol of each length.
    first_index: [u32; 13],
    /// Present symbols sorted by (length, value).
    symbols: Vec<u16>,
}

/// Element `elem`'s 7 raw bits in lanes9 raw bytes of `n` elements, read
/// as section 12 states: group `g` of 8 elements (`elem / 8`) starts at
/// byte `7g`; element `k < 7` of it is byte `k`'s bits 0..7; element 7, in a
/// whole group, has byte `i`'s bit 7 as its bit `i`.
fn raw9(raw: &[u8], n: usize, elem: usize) -> u8 {
    let (g, k) = (elem / 8, elem % 8);
    let group = &raw[7 * g..];
    if k < 7 {
        return group[k] & 0x7f;
    }
    debug_assert!(8 * g + 8 <= n, "an eighth element is in a whole group");
    (0..7).fold(0, |acc, i| acc | (group[i] >> 7) << i)
}

impl Canonical {
    /// `t` must be valid: lengths are at most 12.
    fn new(t: &CompressedTensor) -> Self {
        let mut c = Canonical {
            max_len: t.max_len as u32,
            only_symbol: t.only_symbol,
            first_code: [0; 13],
            count: [0; 13],
            first_index: [0; 13],
            symbols: Vec::new(),
        };
        let (mut code, mut index) = (0u32, 0u32);
        for len in 1..=c.max_len as usize {
            c.first_code[len] = code;
            c.first_index[len] = index;
            for (s, &l) in t.code_lengths.iter().enumerate() {
                if l as usize == len {
                    c.symbols.push(s as u16);
                    c.count[len] += 1;
                }
            }
            code = (code + c.count[len]) << 1;
            index += c.count[len];
        }
        c
    }

    /// Symbol and length of the code at the top of `buf`, read bit by bit.
    fn decode(&self, buf: u64) -> Option<(u16, u32)> {
        if self.max_len == 0 {
            return Some((self.only_symbol, 0));
        }
        let mut code = 0u32;
        for len in 1..=self.max_len as usize {
            code = code << 1 | (buf >> (64 - len)) as u32 & 1;
            let offset = code.wrapping_sub(self.first_code[len]);
            if offset < self.count[len] {
                return Some((self.symbols[(self.first_index[len] + offset) as usize], len as u32));
            }
        }
        // Unreachable for a complete code, which validate() guarantees.
        None
    }
}

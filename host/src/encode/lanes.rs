//! The encoder of the lanes layout (`docs/FORMAT.md` section 8), the CPU's.
//!
//! Each lane's codes are one bit string, stored whole and padded to words,
//! so lanes are coded independently: block by block of rows (the block stays
//! in the L1 cache), lane by lane within a block (its bit writer stays in
//! registers), each lane into its own byte slot, then copied out. A row's
//! eight codes of a lane are concatenated and written with one store when
//! they fit it; for large tensors a table of code pairs halves the lookups
//! (pairs of exponents, or of lanes9's 9-bit symbols).

use df11_gpu::bits;
use df11_gpu::format::{LANE_RUN, LANES, MAX_CODE_LEN, ROW_ELEMS, SYMBOLS, SYMBOLS9};

/// Encodes one segment in the lanes layout: each lane's codes, in slot order,
/// as one bit string zero-padded to whole words. Appends the segment's words
/// to `words` and each lane's word count to `lens`.
pub(super) fn encode_segment(
    seg: &[u16],
    enc: &CodeTable,
    max_len: u32,
    sc: &mut Scratch,
    words: &mut Vec<u32>,
    lens: &mut Vec<u32>,
) {
    // One compiled loop for each way of looking codes up, so that none
    // carries another's registers.
    let how = match enc.pair {
        None => SINGLE,
        Some(Pairs::Exponents(_)) => PAIRS8,
        Some(Pairs::Symbols9(_)) => PAIRS9,
    };
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("bmi2") && std::is_x86_feature_detected!("movbe") {
        // SAFETY: the CPU has BMI2 and MOVBE, the features the function enables.
        return unsafe {
            match how {
                PAIRS8 => encode_segment_bmi2::<PAIRS8>(seg, enc, max_len, sc, words, lens),
                PAIRS9 => encode_segment_bmi2::<PAIRS9>(seg, enc, max_len, sc, words, lens),
                _ => encode_segment_bmi2::<SINGLE>(seg, enc, max_len, sc, words, lens),
            }
        };
    }
    match how {
        PAIRS8 => encode_segment_impl::<PAIRS8>(seg, enc, max_len, sc, words, lens),
        PAIRS9 => encode_segment_impl::<PAIRS9>(seg, enc, max_len, sc, words, lens),
        _ => encode_segment_impl::<SINGLE>(seg, enc, max_len, sc, words, lens),
    }
}

/// How [`encode_segment_impl`] looks codes up: one element at a time in the
/// single table, or two at a time in a pair table of exponents (lanes) or of
/// 9-bit symbols (lanes9).
const SINGLE: u8 = 0;
const PAIRS8: u8 = 1;
const PAIRS9: u8 = 2;

/// [`encode_segment`] with BMI2's shifts (any register holds the count, where
/// the baseline x86-64 shifts need it in `cl`) and MOVBE's byte-swapping
/// stores of the big-endian stream.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2,movbe")]
fn encode_segment_bmi2<const HOW: u8>(
    seg: &[u16],
    enc: &CodeTable,
    max_len: u32,
    sc: &mut Scratch,
    words: &mut Vec<u32>,
    lens: &mut Vec<u32>,
) {
    encode_segment_impl::<HOW>(seg, enc, max_len, sc, words, lens)
}

/// [`encode_segment`]'s body, compiled for each CPU feature set and each
/// way `HOW` of looking codes up (`enc` holds the pair table it names).
///
/// Block by block of rows (the block stays in the L1 cache while every lane
/// reads its part), lane by lane within a block (its writer state stays in
/// registers), each lane into its own byte slot of the scratch; then the
/// slots are copied out.
#[inline(always)]
fn encode_segment_impl<const HOW: u8>(
    seg: &[u16],
    enc: &CodeTable,
    max_len: u32,
    sc: &mut Scratch,
    words: &mut Vec<u32>,
    lens: &mut Vec<u32>,
) {
    let rows = seg.len().div_ceil(ROW_ELEMS);
    // A lane's bytes are at most rows·max_len; a block's writes reach at
    // most `WINDOW` bytes past its first. Whole u64s, so that each slot is
    // aligned for words.
    let cap = (rows * max_len as usize + WINDOW).div_ceil(8);
    if sc.slots.len() < cap * LANES {
        sc.slots.resize(cap * LANES, 0);
    }
    let slots = bytemuck::cast_slice_mut::<u64, u8>(&mut sc.slots[..cap * LANES]);
    let mut lanes = [BitWriter::default(); LANES];
    let blocks = seg.chunks(ROW_ELEMS * LANE_BLOCK_ROWS);
    for (block, next) in blocks.clone().zip(blocks.skip(1).map(Some).chain([None])) {
        // The lanes read a block in strides of a row: without this, lines
        // would come from memory one at a time as the first lane reads them.
        // Each lane asks for its share of the next block's lines, so that
        // the requests do not all wait at once for the core's few line-fill
        // buffers (one burst of 64 held a third of the coding time).
        let ahead: &[u8] = bytemuck::cast_slice(next.unwrap_or(&[]));
        let share = ahead.len().div_ceil(LANES);
        // Only a tensor's last row can be partial (`tail`).
        let (full, tail) = block.as_chunks::<ROW_ELEMS>();
        // With a pair table, the block's pair indices first, in one
        // vectorised pass, so that the lanes load them directly: exponent
        // bytes, read two at a time, or 18-bit indices of two symbols.
        let (table8, table9) = match &enc.pair {
            Some(Pairs::Exponents(t)) if HOW == PAIRS8 => (&**t, &EMPTY_PAIRS9),
            Some(Pairs::Symbols9(t)) if HOW == PAIRS9 => (&EMPTY_PAIRS8, &**t),
            _ => (&EMPTY_PAIRS8, &EMPTY_PAIRS9),
        };
        let n = full.len() * ROW_ELEMS;
        if HOW == PAIRS8 {
            let exps = &mut bytemuck::cast_slice_mut::<u16, u8>(&mut sc.exps[..])[..n];
            for (e, &b) in exps.iter_mut().zip(full.as_flattened()) {
                *e = bits::exponent(b);
            }
        }
        if HOW == PAIRS9 {
            for (p, b) in sc.pairs9.iter_mut().zip(full.as_flattened().as_chunks::<2>().0) {
                *p = pair9_index(b[0], b[1]);
            }
        }
        let pairs = &sc.exps[..if HOW == PAIRS8 { n / 2 } else { 0 }];
        let pairs9 = &sc.pairs9[..if HOW == PAIRS9 { n / 2 } else { 0 }];
        for (j, (w, out)) in lanes.iter_mut().zip(slots.chunks_exact_mut(8 * cap)).enumerate() {
            crate::hint::prefetch(ahead.get(j * share..).map_or(&[], |a| &a[..share.min(a.len())]));
            let mut st = *w;
            // A fixed-size window, so that the stores need no bounds checks.
            let base = st.byte;
            st.byte = 0;
            let out: &mut [u8; WINDOW] = (&mut out[base..base + WINDOW]).try_into().unwrap();
            if HOW == PAIRS8 {
                let rows = pairs.as_chunks::<{ ROW_ELEMS / 2 }>().0.iter().map(|row| {
                    // Two exponents a lookup: their bytes, one u16 load,
                    // index the pair table (loads, where one u64 split by
                    // shifts took seven more instructions a row).
                    let p = row.as_chunks::<{ LANE_RUN / 2 }>().0[j];
                    let pair = |k: usize| table8[u16::from_le(p[k]) as usize];
                    (quad(pair(0), pair(1)), quad(pair(2), pair(3)))
                });
                put_rows(&mut st, out, rows);
            } else if HOW == PAIRS9 {
                let rows = pairs9.as_chunks::<{ ROW_ELEMS / 2 }>().0.iter().map(|row| {
                    let p = row.as_chunks::<{ LANE_RUN / 2 }>().0[j];
                    // The mask never acts, but proves the index in bounds.
                    let pair = |k: usize| table9[(p[k] & PAIR9_MASK) as usize];
                    (quad(pair(0), pair(1)), quad(pair(2), pair(3)))
                });
                put_rows(&mut st, out, rows);
            } else {
                let rows = full.iter().map(|row| {
                    let e: [u64; LANE_RUN] = std::array::from_fn(|k| enc.get(row[j * LANE_RUN + k]));
                    (four(&e[..4]), four(&e[4..]))
                });
                put_rows(&mut st, out, rows);
            }
            if !tail.is_empty() {
                // Missing elements code nothing (a zero entry).
                let run: [u64; LANE_RUN] =
                    std::array::from_fn(|k| tail.get(j * LANE_RUN + k).map_or(0, |&x| enc.get(x)));
                st.put(four(&run[..4]), out);
                st.put(four(&run[4..]), out);
            }
            st.byte += base;
            *w = st;
        }
    }
    for (st, out) in lanes.iter().zip(sc.slots.chunks_exact_mut(cap)) {
        // The pending bits and zeros after them, to 8 bytes: past the end of
        // the last word, which the puts' stores may fall short of (the slot
        // holds stale bytes of earlier segments). `cap` leaves room.
        bytemuck::cast_slice_mut::<u64, u8>(out)[st.byte..st.byte + 8].copy_from_slice(&st.acc.to_be_bytes());
        let nwords = (8 * st.byte + st.pos as usize).div_ceil(32);
        let stream = &bytemuck::cast_slice::<u64, u32>(out)[..nwords];
        if cfg!(target_endian = "little") {
            words.extend_from_slice(stream);
        } else {
            words.extend(stream.iter().map(|w| w.swap_bytes()));
        }
        lens.push(nwords as u32);
    }
}

/// Rows coded lane by lane at a time in the lanes layout: 4 KiB of input, so
/// that it, the next block (prefetched) and the lanes' windows share the L1
/// cache (measured 7 % faster than 16 KiB).
const LANE_BLOCK_ROWS: usize = 8;

/// A power of two above the bytes a lane's codes fill in a block (at most
/// `MAX_CODE_LEN` a row), so that masking a store's offset with `SPAN - 1`
/// never changes it but proves it in bounds.
const SPAN: usize = (LANE_BLOCK_ROWS * MAX_CODE_LEN as usize + 8).next_power_of_two();

/// The bytes a lane's writes in a block may reach: `SPAN` and the 8 of a store.
const WINDOW: usize = SPAN + 8;

/// The lanes layout's code tables. An entry holds a code, or several codes
/// concatenated, left-aligned in the top bits with zeros after them, and its
/// length in bits in the low 6 bits (codes are at most 12 bits, so the two
/// never overlap while the entry holds at most 58 bits).
pub(super) struct CodeTable {
    /// Per 10-bit index `bits >> 6` (sign, exponent and the mantissa's top
    /// bit, so that no mask is needed): one code, of the exponent or of the
    /// lanes9 layout's 9-bit symbol.
    single: [u64; 4 * SYMBOLS],
    /// For tensors large enough to pay for it, both codes of two
    /// consecutive elements, first element's first.
    pair: Option<Pairs>,
}

/// The pair tables. Only pairs of symbols the tensor holds are filled; the
/// rest stay zero, untouched pages of a zeroed allocation, so that the table
/// costs its used entries' lines (a range of symbols a page), not its size.
enum Pairs {
    /// Indexed by two exponent bytes read as a little-endian u16 (first
    /// element's in the low byte).
    Exponents(Box<[u64; 1 << 16]>),
    /// Indexed by [`pair9_index`].
    Symbols9(Box<[u64; 1 << 18]>),
}

/// Stand-ins for the pair table a loop does not use: never read.
static EMPTY_PAIRS8: [u64; 1 << 16] = [0; 1 << 16];
static EMPTY_PAIRS9: [u64; 1 << 18] = [0; 1 << 18];

/// The lanes9 pair table's index of elements `a` then `b`: their 9-bit
/// symbols ([`bits::symbol9`]), `a`'s in the low bits. Taken from both
/// elements in one u32 (`a` in its low half), so that a vectorised loop
/// needs no unpacking: `a`'s symbol is its bits 6..15, `b`'s its bits 22..31.
#[inline(always)]
fn pair9_index(a: u16, b: u16) -> u32 {
    let x = a as u32 | (b as u32) << 16;
    (x >> 6) & 0x1ff | (x >> 13) & 0x1ff << 9
}

/// Every [`pair9_index`].
const PAIR9_MASK: u32 = (1 << 18) - 1;

/// A zeroed pair table, its pages untouched.
fn zeroed_pairs<const N: usize>() -> Box<[u64; N]> {
    vec![0; N].into_boxed_slice().try_into().expect("N entries")
}

/// The pair table's setup (filling an entry for each pair of exponents the
/// tensor holds, and the pages they are on) is paid back from about 8
/// elements per entry, and 64 Ki elements in all (measured: 4,096 elements
/// took 30 µs with it, 16 without).
const PAIR_TABLE_MIN_ELEMENTS: usize = 1 << 16;

/// The lanes9 pair table takes about 55 µs to set up (its 2 MiB allocation,
/// the faults of the pages it touches, its entries): measured on one core,
/// encoding 0.5M elements took 2–5 % longer with it, 2M elements 5–12 %
/// less, 33.5M elements about 5 % less.
const PAIR9_TABLE_MIN_ELEMENTS: usize = 1 << 21;

/// Whether a pair table pays for a tensor of `elements` with `used`
/// symbols, where the table's setup needs `min` elements.
fn pays(elements: usize, used: usize, min: usize) -> bool {
    elements >= min.max(8 * used * used)
}

/// A code of `len` bits (0: the symbol does not occur) as a table entry.
fn entry(len: u8, code: u32) -> u64 {
    if len == 0 { 0 } else { (code as u64) << (64 - len) | len as u64 }
}

/// A pair table: entry `first | second << shift` for every two used symbols.
fn pair_table<const N: usize>(single: &[u64], used: &[usize], shift: u32) -> Box<[u64; N]> {
    let mut pair = zeroed_pairs::<N>();
    for &second in used {
        for &first in used {
            pair[first | second << shift] = concat(single[first], single[second]);
        }
    }
    pair
}

impl CodeTable {
    pub(super) fn new(lengths: &[u8; SYMBOLS], codes: &[u32; SYMBOLS], elements: usize) -> Self {
        let single: [u64; SYMBOLS] = std::array::from_fn(|i| entry(lengths[i], codes[i]));
        let used: Vec<usize> = (0..SYMBOLS).filter(|&s| lengths[s] > 0).collect();
        let pair = pays(elements, used.len(), PAIR_TABLE_MIN_ELEMENTS)
            .then(|| Pairs::Exponents(pair_table(&single, &used, 8)));
        CodeTable { single: std::array::from_fn(|i| single[(i >> 1) % SYMBOLS]), pair }
    }

    /// The table of a lanes9 code: `lengths` and `codes` of the 512 symbols
    /// ([`bits::symbol9`]), for a tensor of `elements`. Its pair table takes
    /// 2 MiB of address space, of which a tensor's used pairs touch a few
    /// pages: the symbols of its exponents make a short range.
    pub(super) fn new9(lengths: &[u8; SYMBOLS9], codes: &[u32; SYMBOLS9], elements: usize) -> Self {
        let single: [u64; SYMBOLS9] = std::array::from_fn(|i| entry(lengths[i], codes[i]));
        let used: Vec<usize> = (0..SYMBOLS9).filter(|&s| lengths[s] > 0).collect();
        let pair = pays(elements, used.len(), PAIR9_TABLE_MIN_ELEMENTS)
            .then(|| Pairs::Symbols9(pair_table(&single, &used, 9)));
        CodeTable { single: std::array::from_fn(|i| single[i % SYMBOLS9]), pair }
    }

    /// The entry of the element with bit pattern `b`.
    #[inline(always)]
    fn get(&self, b: u16) -> u64 {
        self.single[(b >> 6) as usize]
    }
}

/// Puts rows' codes, each row's eight as two halves from [`quad`] or
/// [`four`]: with one store when they fit it, as real weights' codes
/// (about 3 bits on average) nearly always do.
#[inline(always)]
fn put_rows(st: &mut BitWriter, out: &mut [u8; WINDOW], rows: impl Iterator<Item = ((u64, u32), (u64, u32))>) {
    for ((b0, l0), (b1, l1)) in rows {
        if l0 + l1 <= PUT_MAX {
            st.put((b0 | b1.wrapping_shr(l0), l0 + l1), out);
        } else {
            st.put((b0, l0), out);
            st.put((b1, l1), out);
        }
    }
}

/// Four single-code entries concatenated, as [`BitWriter::put`] takes them.
///
/// Built as a tree, so that the dependency chain is short. Codes sit above
/// bit 51, so the sum of entries has the sum of lengths in its low 32 bits;
/// the lengths left in the low bits of the concatenation are cleared at the
/// end (the codes end above bit 15).
#[inline(always)]
fn four(e: &[u64]) -> (u64, u32) {
    let (a, b, c, d) = (e[0], e[1], e[2], e[3]);
    let ab = a | b.wrapping_shr(a as u32);
    let cd = c | d.wrapping_shr(c as u32);
    let lab = a.wrapping_add(b);
    ((ab | cd.wrapping_shr(lab as u32)) & !63, lab.wrapping_add(c).wrapping_add(d) as u32)
}

/// Entry `a` followed by entry `b` (together at most 58 bits).
#[inline(always)]
fn concat(a: u64, b: u64) -> u64 {
    // A shift by a whole entry shifts by its low 6 bits, its length.
    ((a | b.wrapping_shr(a as u32)) & !63) | ((a & 63) + (b & 63))
}

/// Two entries of at most 24 bits each (as the pair table's) concatenated, as
/// [`BitWriter::put`] takes them: the bits, zeros after them, and their length.
///
/// Cheaper than [`concat()`]: such entries are zero from bit 6 to bit 39, so the
/// sum of the two has the sum of the lengths in its low 32 bits, and the
/// lengths left in the low bits of the concatenation are simply cleared.
#[inline(always)]
fn quad(a: u64, b: u64) -> (u64, u32) {
    ((a | b.wrapping_shr(a as u32)) & !63, a.wrapping_add(b) as u32)
}

/// The most bits one [`BitWriter::put`] takes: 7 pending bits and these fill
/// at most 63 of the 64 bits it stores.
const PUT_MAX: u32 = 56;

/// One lane's MSB-first bit writer.
#[derive(Clone, Copy, Default)]
struct BitWriter {
    /// Bits not yet in whole stream bytes, left-aligned, zeros after them.
    acc: u64,
    /// How many (under 8).
    pos: u32,
    /// Whole bytes written so far.
    byte: usize,
}

impl BitWriter {
    /// Appends up to `PUT_MAX` bits (left-aligned in `bits`, zeros after
    /// them), then stores the 8 bytes from the partial one: at most 63 bits,
    /// so these hold them all and zeros after them, and the shift below stays
    /// under 64.
    #[inline(always)]
    fn put(&mut self, (bits, len): (u64, u32), out: &mut [u8; WINDOW]) {
        debug_assert!(len <= PUT_MAX);
        self.acc |= bits.wrapping_shr(self.pos);
        self.pos += len;
        // See `SPAN`: the mask never acts (one instruction, where a clamp or
        // a bounds check take three).
        let at = self.byte & (SPAN - 1);
        out[at..at + 8].copy_from_slice(&self.acc.to_be_bytes());
        self.byte += (self.pos / 8) as usize;
        self.acc = self.acc.wrapping_shl(self.pos & !7);
        self.pos %= 8;
    }
}

/// Buffers reused across the segments one worker encodes.
pub(super) struct Scratch {
    /// The per-lane byte slots (u64s, so that they can be read as words).
    slots: Vec<u64>,
    /// The exponent bytes of a block of rows.
    /// As little-endian u16s: the pair table's indices.
    exps: Box<[u16; ROW_ELEMS * LANE_BLOCK_ROWS / 2]>,
    /// The lanes9 pair table's indices of a block of rows.
    pairs9: Box<[u32; ROW_ELEMS * LANE_BLOCK_ROWS / 2]>,
}

impl Scratch {
    pub(super) fn new() -> Self {
        const HALF: usize = ROW_ELEMS * LANE_BLOCK_ROWS / 2;
        Scratch { slots: Vec::new(), exps: Box::new([0; HALF]), pairs9: Box::new([0; HALF]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::huffman::{canonical_codes, lengths_into};
    use crate::synth::{SplitMix64, realistic_weights};

    /// Both layouts' pair tables code a segment exactly as the single table
    /// does (the same words, the same lane lengths), whatever the tensor's
    /// size says: on every bit pattern, scrambled (every pair entry of
    /// either table in use, codes up to 12 bits), and on realistic weights,
    /// with a partial last row.
    #[test]
    fn pair_tables_code_as_the_single_table() {
        let mut rng = SplitMix64::new(17);
        let mut every: Vec<u16> = (0..4 << 16).map(|i| i as u16).collect();
        for i in (1..every.len()).rev() {
            every.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let realistic = realistic_weights(1, 300 * ROW_ELEMS + 77, 0.02, 3);
        for seg in [&every[..], &realistic[..]] {
            for nine in [false, true] {
                let symbols = if nine { SYMBOLS9 } else { SYMBOLS };
                let mut hist = vec![0u64; symbols];
                for &b in seg {
                    hist[if nine { bits::symbol9(b) as usize } else { bits::exponent(b) as usize }] += 1;
                }
                let mut lengths = [0u8; SYMBOLS9];
                lengths_into(&hist, MAX_CODE_LEN, &mut lengths[..symbols]);
                let max_len = lengths.iter().copied().max().unwrap() as u32;
                let table = |elements| {
                    if nine {
                        CodeTable::new9(&lengths, &canonical_codes(&lengths), elements)
                    } else {
                        let l8: &[u8; SYMBOLS] = lengths[..SYMBOLS].try_into().unwrap();
                        CodeTable::new(l8, &canonical_codes(l8), elements)
                    }
                };
                let (paired, single) = (table(usize::MAX / 2), table(0));
                assert!(paired.pair.is_some() && single.pair.is_none());
                let code = |t: &CodeTable| {
                    let (mut words, mut lens) = (Vec::new(), Vec::new());
                    // Segments of 256 rows, the last partial.
                    for s in seg.chunks(256 * ROW_ELEMS) {
                        encode_segment(s, t, max_len, &mut Scratch::new(), &mut words, &mut lens);
                    }
                    (words, lens)
                };
                assert!(code(&paired) == code(&single), "nine = {nine}, {} elements", seg.len());
            }
        }
    }
}

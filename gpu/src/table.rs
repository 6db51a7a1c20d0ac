//! Canonical-code decode table shared by the fast CPU decoder and the GPU.
//!
//! Codes are canonical: symbols sorted by (length, symbol value) receive
//! consecutive code values, shortest first, as in DEFLATE. A table entry is
//! indexed by the next [`TABLE_BITS`] bits of a lane's stream and holds
//! `symbol | length << 8`.
//!
//! The reference decoder in `df11-host` deliberately does not use this table.

use crate::format::{MAX_CODE_LEN, MULTI_TABLE_WORDS, SYMBOLS, SYMBOLS9, TABLE_BITS, TABLE_SIZE};

/// One decode-table entry: the symbol in bits 0..8, the code length in bits 8..12.
pub type Entry = u16;

/// Symbol of an entry.
#[inline(always)]
pub const fn entry_symbol(e: Entry) -> u8 {
    e as u8
}

/// Code length of an entry, in bits.
#[inline(always)]
pub const fn entry_len(e: Entry) -> u32 {
    (e >> 8) as u32
}

/// Why a set of code lengths cannot form a decodable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// A length above [`MAX_CODE_LEN`].
    LengthTooLong,
    /// The Kraft sum is not exactly one: the code is over-subscribed or leaves
    /// bit patterns that decode to nothing.
    Incomplete,
}

/// Fills `table` from per-symbol code lengths (0 = symbol absent).
///
/// With `max_len == 0` the code is the zero-length code of the single symbol
/// `only_symbol`, and every entry decodes it while consuming no bits.
/// Otherwise the lengths must form a complete prefix code (Kraft sum exactly
/// one), so every table entry is meaningful: no bit pattern, however corrupt,
/// reaches an undefined entry.
pub fn build(lengths: &[u8; SYMBOLS], only_symbol: u8, table: &mut [Entry; TABLE_SIZE]) -> Result<u32, TableError> {
    build_any(lengths, only_symbol as u16, 8, table)
}

/// One lanes9 decode-table entry: the 9-bit symbol in bits 0..9, the code
/// length in bits 9..13.
pub type Entry9 = u16;

/// Symbol of a lanes9 entry.
#[inline(always)]
pub const fn entry9_symbol(e: Entry9) -> u16 {
    e & 0x1ff
}

/// Code length of a lanes9 entry, in bits.
#[inline(always)]
pub const fn entry9_len(e: Entry9) -> u32 {
    (e >> 9) as u32
}

/// [`build`] for the 512 symbols of the lanes9 layout, into
/// [`Entry9`] entries.
pub fn build9(lengths: &[u8; SYMBOLS9], only_symbol: u16, table: &mut [Entry9; TABLE_SIZE]) -> Result<u32, TableError> {
    build_any(lengths, only_symbol, 9, table)
}

/// [`build`] for any alphabet, entries `symbol | length << shift`.
fn build_any(lengths: &[u8], only_symbol: u16, shift: u32, table: &mut [u16; TABLE_SIZE]) -> Result<u32, TableError> {
    let max_len = lengths.iter().copied().max().unwrap_or(0) as u32;
    if max_len > MAX_CODE_LEN {
        return Err(TableError::LengthTooLong);
    }
    if max_len == 0 {
        table.fill(only_symbol);
        return Ok(0);
    }
    // Kraft sum in units of 2^-TABLE_BITS.
    let mut kraft: u32 = 0;
    for &l in lengths.iter() {
        if l != 0 {
            kraft += 1 << (TABLE_BITS - l as u32);
        }
    }
    if kraft != TABLE_SIZE as u32 {
        return Err(TableError::Incomplete);
    }
    // Canonical order: by length, then by symbol. Each code of length l covers
    // 2^(TABLE_BITS - l) consecutive entries starting at its left-aligned value.
    let mut next: usize = 0;
    for len in 1..=max_len {
        let span = 1usize << (TABLE_BITS - len);
        for (sym, &l) in lengths.iter().enumerate() {
            if l as u32 == len {
                table[next..next + span].fill(sym as u16 | (len as u16) << shift);
                next += span;
            }
        }
    }
    debug_assert_eq!(next, TABLE_SIZE);
    Ok(max_len)
}

/// Codes a multi-symbol lookup decodes at most: four exponent bytes fill
/// one `u32`, and at realistic entropies (about 2.6 bits a code) a 12-bit
/// window rarely holds a fifth whole code.
pub const MULTI_MAX: u32 = 4;

/// The whole codes at the start of a 12-bit window `idx` (zeros after its
/// end), at most [`MULTI_MAX`]: `(exponents, count, cumulative)`, the first
/// exponent in the low byte, and nibble `i` of `cumulative` the bits of the
/// first `i + 1` codes (nibbles past `count` repeat the total).
///
/// A code is taken only when it lies whole inside the window, so the result
/// never depends on bits past the window, and the first `k` codes and their
/// bits never on bits after those `k` codes: a decoder that takes only `k`
/// codes of a lookup is exact even when the rest of the window is garbage.
/// `single` must be a table [`build`] made; every entry then decodes at least
/// one code (a code is at most 12 bits), or four of the zero-length code.
#[inline]
pub fn multi_entry(single: &[Entry; TABLE_SIZE], idx: usize) -> (u32, u32, u32) {
    let (syms, count, cumulative) =
        multi_codes::<{ MULTI_MAX as usize }>(idx, |i| (entry_symbol(single[i]) as u16, entry_len(single[i])));
    let exps = syms.iter().rev().fold(0u32, |acc, &s| acc << 8 | s as u32);
    (exps, count, cumulative)
}

/// [`multi_entry`] for a lanes9 table [`build9`] made: the symbols as
/// `u16`s, unused ones 0.
#[inline]
pub fn multi_entry9(single: &[Entry9; TABLE_SIZE], idx: usize) -> ([u16; MULTI_MAX as usize], u32, u32) {
    multi_codes::<{ MULTI_MAX as usize }>(idx, |i| (entry9_symbol(single[i]), entry9_len(single[i])))
}

/// The codes of [`multi_entry`], from `code(i)`, the symbol and length of
/// single-table entry `i`.
#[inline(always)]
fn multi_codes<const MAX: usize>(idx: usize, code: impl Fn(usize) -> (u16, u32)) -> ([u16; MAX], u32, u32) {
    const { assert!(MAX <= 8, "the nibbles of `cumulative` fill a u32") };
    let (mut used, mut count, mut syms, mut cumulative) = (0u32, 0u32, [0u16; MAX], 0u32);
    while (count as usize) < MAX {
        // The next code's window: the rest of `idx`, zeros after it.
        let (sym, len) = code((idx << used) & (TABLE_SIZE - 1));
        if used + len > TABLE_BITS {
            break;
        }
        syms[count as usize] = sym;
        used += len;
        cumulative |= used << (4 * count);
        count += 1;
    }
    for i in count..MAX as u32 {
        cumulative |= used << (4 * i);
    }
    (syms, count, cumulative)
}

/// The whole codes at the start of a 12-bit window `idx`, as [`multi_entry`]
/// takes them but at most `MAX` (at most 8): `(exponents, count, bits)`.
/// For a CPU decoder that stores a lookup's exponents with one 8-byte store
/// and so can take five (issue 16's measurements: 3.8 codes a lookup at most
/// four, 4.2 at most five, on realistic weights).
#[inline]
pub fn multi_entry_n<const MAX: usize>(single: &[Entry; TABLE_SIZE], idx: usize) -> ([u8; MAX], u32, u32) {
    let (syms, count, cumulative) = multi_codes::<MAX>(idx, |i| (entry_symbol(single[i]) as u16, entry_len(single[i])));
    (syms.map(|s| s as u8), count, cumulative >> (4 * (MAX - 1)) & 15)
}

/// Bit of a multi-symbol entry's meta word where its code count starts.
const MULTI_COUNT_SHIFT: u32 = 20;

/// The bits the first `min(k, count)` codes of a multi-symbol entry take,
/// from its meta word (`k` at most [`MULTI_MAX`]; 0 for `k = 0`).
#[inline(always)]
pub const fn multi_bits(meta: u32, k: u32) -> u32 {
    meta >> (4 * k) & 15
}

/// The number of codes of a multi-symbol entry, from its meta word: at most
/// 7 whatever the word holds.
#[inline(always)]
pub const fn multi_count(meta: u32) -> u32 {
    meta >> MULTI_COUNT_SHIFT & 7
}

/// Fills the GPU's multi-symbol table for the lanes layout from a table
/// [`build`] made: entry `i` is the words `2i` (the exponents of
/// [`multi_entry`]) and `2i + 1`: nibble `k` (0..=4) the bits of the first
/// `min(k, count)` codes (nibble 0 is zero, so that taking no code consumes
/// nothing), the count in bits 20..23. One 8-byte shared-memory load serves
/// a lookup, and a decoder that needs `r` more codes consumes nibble
/// `min(r, 4)`: a shift it knows before the load.
pub fn build_multi(single: &[Entry; TABLE_SIZE], out: &mut [u32; MULTI_TABLE_WORDS]) {
    fill_multi(out, |i| (entry_symbol(single[i]) as u16, entry_len(single[i])));
}

/// The multi-symbol table of [`build_multi`] and [`build_multi9`], from
/// `code(i)`, the symbol and length of single-table entry `i`: symbols'
/// low bytes in word `2i`, their bit 8 (zero for exponents) in the meta word.
fn fill_multi(out: &mut [u32; MULTI_TABLE_WORDS], code: impl Fn(usize) -> (u16, u32)) {
    for (idx, w) in out.chunks_exact_mut(2).enumerate() {
        let (syms, count, cumulative) = multi_codes::<{ MULTI_MAX as usize }>(idx, &code);
        let low = syms.iter().rev().fold(0u32, |acc, &s| acc << 8 | (s & 0xff) as u32);
        let tops = syms.iter().rev().fold(0u32, |acc, &s| acc << 1 | (s >> 8) as u32);
        w[0] = low;
        w[1] = cumulative << 4 | count << MULTI_COUNT_SHIFT | tops << MULTI_TOPS_SHIFT;
    }
}

/// Bit of a lanes9 multi-symbol meta word where the top bits (bit 8) of
/// its four symbols start, the first symbol's lowest.
const MULTI_TOPS_SHIFT: u32 = 24;

/// The top bits (bit 8) of a lanes9 entry's symbols, from its meta word:
/// bit `i` is symbol `i`'s.
#[inline(always)]
pub const fn multi_tops(meta: u32) -> u32 {
    meta >> MULTI_TOPS_SHIFT & 15
}

/// [`build_multi`] for a lanes9 table [`build9`] made: word `2i` holds the
/// low 8 bits of entry `i`'s symbols, as [`build_multi`] holds exponents,
/// and the meta word `2i + 1` also their bit 8 in bits 24..28
/// ([`multi_tops`]): the lookup is the same 8-byte load.
pub fn build_multi9(single: &[Entry9; TABLE_SIZE], out: &mut [u32; MULTI_TABLE_WORDS]) {
    fill_multi(out, |i| (entry9_symbol(single[i]), entry9_len(single[i])));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_symbols() {
        let mut lengths = [0u8; SYMBOLS];
        lengths[7] = 1;
        lengths[3] = 1;
        let mut t = [0; TABLE_SIZE];
        assert_eq!(build(&lengths, 0, &mut t), Ok(1));
        // Symbol 3 sorts first and gets code 0.
        assert_eq!(t[0], 3 | 1 << 8);
        assert_eq!(t[TABLE_SIZE - 1], 7 | 1 << 8);
    }

    #[test]
    fn rejects_incomplete_and_oversubscribed() {
        let mut lengths = [0u8; SYMBOLS];
        lengths[0] = 1;
        let mut t = [0; TABLE_SIZE];
        assert_eq!(build(&lengths, 0, &mut t), Err(TableError::Incomplete));
        lengths[1] = 1;
        lengths[2] = 2;
        assert_eq!(build(&lengths, 0, &mut t), Err(TableError::Incomplete));
        lengths[2] = 13;
        assert_eq!(build(&lengths, 0, &mut t), Err(TableError::LengthTooLong));
    }

    #[test]
    fn multi_entries_take_whole_codes_in_order() {
        // Lengths 1, 2, 3, 3 for symbols 10, 11, 12, 13: codes 0, 10, 110, 111.
        let mut lengths = [0u8; SYMBOLS];
        lengths[10..14].copy_from_slice(&[1, 2, 3, 3]);
        let mut t = [0; TABLE_SIZE];
        assert_eq!(build(&lengths, 0, &mut t), Ok(3));
        // 0 10 110 111 0.. : four codes in 9 bits, the fifth not taken.
        let idx = 0b0101_1011_1000;
        assert_eq!(multi_entry(&t, idx), (10 | 11 << 8 | 12 << 16 | 13 << 24, 4, 1 | 3 << 4 | 6 << 8 | 9 << 12));
        // 111 111 111 111: four 3-bit codes, exactly 12 bits.
        assert_eq!(multi_entry(&t, 0xfff).1, 4);
        // With a higher cap: the same first four, then more 1-bit codes.
        assert_eq!(multi_entry_n::<4>(&t, idx), ([10, 11, 12, 13], 4, 9));
        assert_eq!(multi_entry_n::<5>(&t, idx), ([10, 11, 12, 13, 10], 5, 10));
        assert_eq!(multi_entry_n::<8>(&t, idx), ([10, 11, 12, 13, 10, 10, 10, 0], 7, 12));
        assert_eq!(multi_entry_n::<5>(&t, 0xfff), ([13, 13, 13, 13, 0], 4, 12));
        // A 12-bit code alone fills the window: one code, nibbles repeat it.
        lengths = [0; SYMBOLS];
        for (s, l) in lengths.iter_mut().zip(1..=12u8) {
            *s = l;
        }
        lengths[12] = 12;
        assert_eq!(build(&lengths, 0, &mut t), Ok(12));
        assert_eq!(multi_entry(&t, TABLE_SIZE - 1), (12, 1, 0xcccc));
        let mut m = [0; MULTI_TABLE_WORDS];
        build_multi(&t, &mut m);
        assert_eq!(m[2 * (TABLE_SIZE - 1)..], [12, 0xcccc0 | 1 << 20]);
        let meta = m[2 * (TABLE_SIZE - 1) + 1];
        assert_eq!((multi_count(meta), multi_bits(meta, 0), multi_bits(meta, 1), multi_bits(meta, 4)), (1, 0, 12, 12));
    }

    #[test]
    fn nine_bit_tables_hold_every_symbol() {
        // Symbols 0 and 511 at length 1: both ends of the alphabet fit.
        let mut lengths = [0u8; SYMBOLS9];
        lengths[511] = 1;
        lengths[0] = 1;
        let mut t = [0; TABLE_SIZE];
        assert_eq!(build9(&lengths, 0, &mut t), Ok(1));
        assert_eq!((entry9_symbol(t[0]), entry9_len(t[0])), (0, 1));
        assert_eq!((entry9_symbol(t[TABLE_SIZE - 1]), entry9_len(t[TABLE_SIZE - 1])), (511, 1));
        assert_eq!(multi_entry9(&t, TABLE_SIZE - 1), ([511; 4], 4, 1 | 2 << 4 | 3 << 8 | 4 << 12));
        let mut m = [0; MULTI_TABLE_WORDS];
        build_multi9(&t, &mut m);
        // All ones: four codes of symbol 511 (low byte 0xff, bit 8 set).
        let meta = m[2 * (TABLE_SIZE - 1) + 1];
        assert_eq!(
            (m[2 * (TABLE_SIZE - 1)], multi_count(meta), multi_tops(meta), multi_bits(meta, 4)),
            (u32::MAX, 4, 15, 4)
        );
        assert_eq!((m[0], multi_tops(m[1])), (0, 0));
        // 512 symbols of 9 bits: a complete code; 12-bit lengths are the limit.
        assert_eq!(build9(&[9; SYMBOLS9], 0, &mut t), Ok(9));
        assert_eq!(entry9_symbol(t[TABLE_SIZE - 1]), 511);
        lengths[300] = 13;
        assert_eq!(build9(&lengths, 0, &mut t), Err(TableError::LengthTooLong));
        assert_eq!(build9(&[0; SYMBOLS9], 0x1ab, &mut t), Ok(0));
        assert!(t.iter().all(|&e| entry9_symbol(e) == 0x1ab && entry9_len(e) == 0));
    }

    #[test]
    fn single_symbol_consumes_nothing() {
        let lengths = [0u8; SYMBOLS];
        let mut t = [1; TABLE_SIZE];
        assert_eq!(build(&lengths, 200, &mut t), Ok(0));
        assert!(t.iter().all(|&e| entry_symbol(e) == 200 && entry_len(e) == 0));
    }
}

//! Canonical-code decode table shared by the fast CPU decoder and the GPU.
//!
//! Codes are canonical: symbols sorted by (length, symbol value) receive
//! consecutive code values, shortest first, as in DEFLATE. A table entry is
//! indexed by the next [`TABLE_BITS`] bits of a lane's stream and holds
//! `symbol | length << 8`.
//!
//! The reference decoder in `df11-host` deliberately does not use this table.

use crate::format::{MAX_CODE_LEN, SYMBOLS, TABLE_BITS, TABLE_SIZE};

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
    let max_len = lengths.iter().copied().max().unwrap_or(0) as u32;
    if max_len > MAX_CODE_LEN {
        return Err(TableError::LengthTooLong);
    }
    if max_len == 0 {
        table.fill(only_symbol as Entry);
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
                table[next..next + span].fill(sym as Entry | (len as Entry) << 8);
                next += span;
            }
        }
    }
    debug_assert_eq!(next, TABLE_SIZE);
    Ok(max_len)
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
    fn single_symbol_consumes_nothing() {
        let lengths = [0u8; SYMBOLS];
        let mut t = [1; TABLE_SIZE];
        assert_eq!(build(&lengths, 200, &mut t), Ok(0));
        assert!(t.iter().all(|&e| entry_symbol(e) == 200 && entry_len(e) == 0));
    }
}

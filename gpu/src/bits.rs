//! Splitting a bf16 bit pattern into the coded exponent and the raw
//! sign+mantissa byte, and joining them back. Pure bit operations: every one of
//! the 65,536 patterns (NaN payloads, infinities, subnormals, -0) round-trips.
//!
//! A bf16 is `s eeeeeeee mmmmmmm` (bit 15 = sign, bits 14..7 = exponent,
//! bits 6..0 = mantissa).

/// The 8-bit exponent field: bits 14..7.
#[inline(always)]
pub const fn exponent(bits: u16) -> u8 {
    (bits >> 7) as u8
}

/// Sign in bit 7, mantissa in bits 6..0.
#[inline(always)]
pub const fn sign_mantissa(bits: u16) -> u8 {
    (((bits >> 8) & 0x80) | (bits & 0x7f)) as u8
}

/// Inverse of [`exponent`] and [`sign_mantissa`].
#[inline(always)]
pub const fn join(exponent: u8, sign_mantissa: u8) -> u16 {
    (((sign_mantissa as u16) & 0x80) << 8) | ((exponent as u16) << 7) | ((sign_mantissa as u16) & 0x7f)
}

// ---------------------------------------------------------------------------
// The lanes9 layout's split (FORMAT.md section 12): a 9-bit symbol, the
// exponent and the mantissa's top bit, is coded; the sign and the mantissa's
// 6 low bits, 7 bits, are stored raw, 8 elements in 7 bytes.

/// The 9-bit symbol: bits 14..6 (exponent, then the mantissa's top bit).
#[inline(always)]
pub const fn symbol9(bits: u16) -> u16 {
    (bits >> 6) & 0x1ff
}

/// The 7 raw bits: sign in bit 6, the mantissa's bits 5..0 below it.
#[inline(always)]
pub const fn raw7(bits: u16) -> u8 {
    (((bits >> 9) & 0x40) | (bits & 0x3f)) as u8
}

/// Inverse of [`symbol9`] and [`raw7`] (bits of `symbol` above 8 and of
/// `raw` above 6 are ignored).
#[inline(always)]
pub const fn join9(symbol: u16, raw: u8) -> u16 {
    (((raw as u16) & 0x40) << 9) | ((symbol & 0x1ff) << 6) | ((raw as u16) & 0x3f)
}

/// A whole group's 8 raw values ([`raw7`]) as the lanes9 layout stores
/// them, in 7 bytes: byte `i` holds value `i` in bits 0..7 and bit `i` of
/// value 7 in bit 7. A CPU gets values 0..6 with a byte shuffle and value 7
/// with one `pmovmskb`.
#[inline(always)]
pub const fn pack_raw9(raw: [u8; 8]) -> [u8; 7] {
    let mut out = [0u8; 7];
    let mut i = 0;
    while i < 7 {
        out[i] = (raw[i] & 0x7f) | ((raw[7] >> i) & 1) << 7;
        i += 1;
    }
    out
}

/// Inverse of [`pack_raw9`].
#[inline(always)]
pub const fn unpack_raw9(bytes: [u8; 7]) -> [u8; 8] {
    let mut out = [0u8; 8];
    let mut i = 0;
    while i < 7 {
        out[i] = bytes[i] & 0x7f;
        out[7] |= (bytes[i] >> 7) << i;
        i += 1;
    }
    out
}

/// Bytes of a lanes9 record's raw data for `n` elements: 7 for each whole
/// group of 8, then one for each element of a partial last group.
#[inline(always)]
pub const fn raw9_len(n: u64) -> u64 {
    let run = crate::format::LANE_RUN as u64;
    crate::format::RAW9_GROUP_BYTES as u64 * (n / run) + n % run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_round_trips_as_nine_and_seven_bits() {
        for b in 0..=u16::MAX {
            assert_eq!(join9(symbol9(b), raw7(b)), b);
            assert!(symbol9(b) < 512 && raw7(b) < 128);
        }
    }

    #[test]
    fn raw_groups_round_trip() {
        for seed in 0..4096u32 {
            let raw: [u8; 8] =
                core::array::from_fn(|k| (seed.wrapping_mul(2654435761).rotate_left(k as u32 * 7) & 0x7f) as u8);
            assert_eq!(unpack_raw9(pack_raw9(raw)), raw);
        }
        assert_eq!(pack_raw9([0x7f; 8]), [0xff; 7]);
        assert_eq!(pack_raw9([0, 0, 0, 0, 0, 0, 0, 0x41]), [0x80, 0, 0, 0, 0, 0, 0x80]);
        assert_eq!((raw9_len(0), raw9_len(1), raw9_len(8), raw9_len(9), raw9_len(15)), (0, 1, 7, 8, 14));
    }

    #[test]
    fn every_pattern_round_trips() {
        for b in 0..=u16::MAX {
            assert_eq!(join(exponent(b), sign_mantissa(b)), b);
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_round_trips() {
        for b in 0..=u16::MAX {
            assert_eq!(join(exponent(b), sign_mantissa(b)), b);
        }
    }
}

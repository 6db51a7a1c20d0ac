//! Joining CRC32Cs of consecutive byte runs: the CRC of `A ‖ B` from those of
//! `A` and `B` and the length of `B`, in a few hundred operations whatever
//! the length. Parallel encoders and decoders check each run on its own and
//! join the results; the `crc32c` crate's combine squares 32×32 bit matrices
//! and takes tens of microseconds a call, which showed in decode times.
//!
//! A CRC is its message as a polynomial over GF(2), times x^32, modulo the
//! generator P; appending `n` bytes multiplies the first part's contribution
//! by x^(8n) mod P (the initial and final inversions cancel out, as the same
//! ones apply to `A ‖ B` and to `B`). CRC32C stores polynomials bit-reversed:
//! bit 31 holds the coefficient of x^0, bit 0 that of x^31.

/// P without its x^32 term, bit-reversed (Castagnoli).
const POLY: u32 = 0x82F6_3B78;

/// `a · b mod P`, bit-reversed operands and result.
const fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut p = 0;
    let mut i = 0;
    while i < 32 {
        // Here `b` is the second operand times x^i: add it where `a` has x^i.
        p ^= b & 0u32.wrapping_sub((a >> (31 - i)) & 1);
        // Times x: a shift toward bit 0, reduced by P when x^31 falls off.
        b = (b >> 1) ^ (POLY & 0u32.wrapping_sub(b & 1));
        i += 1;
    }
    p
}

/// `X2N[k] = x^(2^k) mod P`, for every bit of a byte count times 8.
const X2N: [u32; 67] = {
    let mut t = [0; 67];
    t[0] = 1 << 30; // x^1
    let mut k = 1;
    while k < t.len() {
        t[k] = mul_mod(t[k - 1], t[k - 1]);
        k += 1;
    }
    t
};

/// `x^(8n) mod P`: a product of the powers for the set bits of `n`.
fn x_pow_8n(n: u64) -> u32 {
    let mut p = 1 << 31; // x^0
    for (k, &x2n) in X2N[3..].iter().enumerate() {
        if n >> k == 0 {
            break;
        }
        if n >> k & 1 == 1 {
            p = mul_mod(x2n, p);
        }
    }
    p
}

/// The CRC32C of `A ‖ B`, given `crc_a` of `A`, `crc_b` of `B` and `B`'s length in bytes.
pub(crate) fn combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    mul_mod(x_pow_8n(len_b), crc_a) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn powers_of_x() {
        // x^8 is bit 31 - 8; x^32 mod P is P itself (bit-reversed, without x^32).
        assert_eq!(x_pow_8n(1), 1 << 23);
        assert_eq!(mul_mod(x_pow_8n(4), 1 << 31), POLY);
        assert_eq!(x_pow_8n(0), 1 << 31);
    }

    proptest! {
        #[test]
        fn combine_matches_the_whole(a in proptest::collection::vec(any::<u8>(), 0..300),
                                     b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let whole = crc32c::crc32c(&[a.as_slice(), b.as_slice()].concat());
            prop_assert_eq!(combine(crc32c::crc32c(&a), crc32c::crc32c(&b), b.len() as u64), whole);
        }

        #[test]
        fn combine_matches_the_crate_for_long_runs(crc_a in any::<u32>(), crc_b in any::<u32>(), len in any::<u64>()) {
            // The crate takes a usize; its answer is the reference for lengths
            // too long to build.
            let len = len >> 24;
            prop_assert_eq!(combine(crc_a, crc_b, len), crc32c::crc32c_combine(crc_a, crc_b, len as usize));
        }
    }
}

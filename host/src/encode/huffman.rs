//! Optimal length-limited prefix codes (package-merge) and canonical code
//! assignment.

use df11_gpu::format::SYMBOLS;

/// Optimal code lengths for the symbol frequencies `hist`, no code longer than
/// `limit` bits (0 = symbol absent).
///
/// Package-merge (Larmore and Hirschberg): for n ≥ 2 present symbols the
/// result minimises `Σ hist[s]·len[s]` subject to `len ≤ limit`, and its Kraft
/// sum is exactly one. With fewer than two present symbols every length is 0.
/// `limit` must satisfy `2^limit ≥ n`; a `limit` of 64 gives unlimited-Huffman
/// lengths for any tensor the format can hold.
///
/// # Panics
/// If `2^limit` is below the number of present symbols or `limit > 64`.
pub fn code_lengths(hist: &[u64; SYMBOLS], limit: u32) -> [u8; SYMBOLS] {
    let mut lengths = [0u8; SYMBOLS];
    lengths_into(hist, limit, &mut lengths);
    lengths
}

/// [`code_lengths`] for an alphabet of any size: writes the length of symbol
/// `s` to `lengths[s]` (which must be zeros and as long as `hist`). For
/// measuring other alphabets; the format's is [`SYMBOLS`].
///
/// # Panics
/// As [`code_lengths`], and if the lengths differ.
pub fn lengths_into(hist: &[u64], limit: u32, lengths: &mut [u8]) {
    assert_eq!(hist.len(), lengths.len(), "one length per symbol");
    // Leaves sorted by (weight, symbol): ties broken by symbol keep the result deterministic.
    let mut leaves: Vec<(u64, usize)> =
        hist.iter().enumerate().filter(|&(_, &c)| c > 0).map(|(s, &c)| (c, s)).collect();
    leaves.sort_unstable();
    let n = leaves.len();
    if n < 2 {
        return;
    }
    assert!(limit <= 64 && (limit >= 64 || n as u64 <= 1u64 << limit), "{n} symbols cannot fit in {limit}-bit codes");
    // A code never needs to be longer than n - 1 bits, so deeper levels change nothing.
    let levels = (limit as usize).min(n - 1);

    // lists[l]: the level-l list, sorted by weight. An item is a leaf (symbol)
    // or a package of two consecutive items of the previous level's list.
    #[derive(Clone, Copy)]
    enum Item {
        Leaf(usize),
        Package,
    }
    let mut lists: Vec<Vec<(u64, Item)>> = Vec::with_capacity(levels);
    lists.push(leaves.iter().map(|&(w, s)| (w, Item::Leaf(s))).collect());
    for _ in 1..levels {
        let prev = lists.last().expect("at least one level");
        let packages = prev.chunks_exact(2).map(|p| (p[0].0 + p[1].0, Item::Package));
        let mut merged = Vec::with_capacity(n + prev.len() / 2);
        let mut packages = packages.peekable();
        let mut leaf_iter = leaves.iter().peekable();
        // Merge, leaves first on equal weights (any fixed rule keeps this deterministic).
        loop {
            match (leaf_iter.peek(), packages.peek()) {
                (Some(&&(lw, s)), Some(&(pw, _))) if lw <= pw => {
                    merged.push((lw, Item::Leaf(s)));
                    leaf_iter.next();
                }
                (Some(&&(lw, s)), None) => {
                    merged.push((lw, Item::Leaf(s)));
                    leaf_iter.next();
                }
                (_, Some(_)) => merged.push(packages.next().expect("peeked")),
                (None, None) => break,
            }
        }
        lists.push(merged);
    }
    // Select the 2n - 2 cheapest items of the top level. Every selected leaf adds
    // one bit to its symbol's length; selected packages select a prefix of the
    // level below (packages are formed from a prefix in order).
    let mut take = 2 * n - 2;
    for list in lists.iter().rev() {
        let mut packages = 0;
        for &(_, item) in &list[..take] {
            match item {
                Item::Leaf(s) => lengths[s] += 1,
                Item::Package => packages += 1,
            }
        }
        take = 2 * packages;
    }
}

/// Canonical code values for `lengths` (DEFLATE convention): symbols sorted by
/// (length, value) receive consecutive codes, shortest first. Absent symbols get 0.
pub fn canonical_codes<const N: usize>(lengths: &[u8; N]) -> [u32; N] {
    let mut codes = [0u32; N];
    let max = lengths.iter().copied().max().unwrap_or(0);
    let mut code: u32 = 0;
    for len in 1..=max {
        for (s, &l) in lengths.iter().enumerate() {
            if l == len {
                codes[s] = code;
                code += 1;
            }
        }
        code <<= 1;
    }
    codes
}

/// Total coded bits `Σ hist[s]·len[s]`.
pub fn coded_bits(hist: &[u64], lengths: &[u8]) -> u64 {
    hist.iter().zip(lengths).map(|(&c, &l)| c * l as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kraft_is_one(lengths: &[u8; SYMBOLS]) -> bool {
        // In units of 2^-64 via u128 so any length up to 64 is exact.
        let sum: u128 = lengths.iter().filter(|&&l| l > 0).map(|&l| 1u128 << (64 - l)).sum();
        sum == 1u128 << 64
    }

    #[test]
    fn trivial_sizes() {
        let mut h = [0u64; SYMBOLS];
        assert_eq!(code_lengths(&h, 12), [0; SYMBOLS]);
        h[9] = 5;
        assert_eq!(code_lengths(&h, 12), [0; SYMBOLS]);
        h[3] = 1;
        let l = code_lengths(&h, 12);
        assert_eq!((l[3], l[9]), (1, 1));
        assert_eq!(l.iter().filter(|&&x| x > 0).count(), 2);
    }

    #[test]
    fn matches_huffman_cost_on_small_example() {
        // Huffman for 1,1,2,4,8: lengths 4,4,3,2,1 → cost 4+4+6+8+8 = 30.
        let mut h = [0u64; SYMBOLS];
        for (s, w) in [(0, 1), (1, 1), (2, 2), (3, 4), (4, 8)] {
            h[s] = w;
        }
        let l = code_lengths(&h, 64);
        assert_eq!(coded_bits(&h, &l), 30);
        assert!(kraft_is_one(&l));
        // Limited to 3 bits the best is 3,3,3,3,1 (cost 32), not 3,3,2,2,2 (cost 34).
        let l3 = code_lengths(&h, 3);
        assert_eq!(coded_bits(&h, &l3), 32);
        assert!(l3.iter().all(|&x| x <= 3) && kraft_is_one(&l3));
    }

    #[test]
    fn doubling_weights_hit_the_limit() {
        // Weights 1, 2, 4, ... make Huffman build a chain (no ties, so a unique answer).
        let mut h = [0u64; SYMBOLS];
        for (i, w) in h.iter_mut().take(40).enumerate() {
            *w = 1 << i;
        }
        let unlimited = code_lengths(&h, 64);
        assert_eq!(unlimited.iter().copied().max(), Some(39));
        assert!(kraft_is_one(&unlimited));
        let limited = code_lengths(&h, 12);
        assert_eq!(limited.iter().copied().max(), Some(12));
        assert!(kraft_is_one(&limited));
        assert!(coded_bits(&h, &limited) > coded_bits(&h, &unlimited));
    }

    #[test]
    fn all_256_uniform_symbols_get_8_bits() {
        let h = [7u64; SYMBOLS];
        assert_eq!(code_lengths(&h, 12), [8; SYMBOLS]);
    }

    #[test]
    fn larger_alphabets() {
        // 512 symbols of Zipf-like weights: the limit holds, the Kraft sum is
        // one, and the cost lies between the entropy and the entropy + 1.
        let h: Vec<u64> = (0..512u64).map(|i| 1_000_000 / (i + 1)).collect();
        let mut l = vec![0u8; 512];
        lengths_into(&h, 12, &mut l);
        assert!(l.iter().all(|&x| (1..=12).contains(&x)));
        let kraft: u128 = l.iter().map(|&x| 1u128 << (64 - x)).sum();
        assert_eq!(kraft, 1u128 << 64);
        let t: u64 = h.iter().sum();
        let bits: u64 = h.iter().zip(&l).map(|(&c, &x)| c * x as u64).sum();
        let ent: f64 = h.iter().map(|&c| c as f64 * (t as f64 / c as f64).log2()).sum();
        assert!((ent..ent + t as f64).contains(&(bits as f64)), "{bits} vs {ent}");
        // Unlimited, the cost is Huffman's: the sum of the weights of its merges.
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<u64>> =
            h.iter().map(|&c| std::cmp::Reverse(c)).collect();
        let mut huffman = 0;
        while let (Some(a), Some(b)) = (heap.pop(), heap.pop()) {
            huffman += a.0 + b.0;
            heap.push(std::cmp::Reverse(a.0 + b.0));
        }
        let mut u = vec![0u8; 512];
        lengths_into(&h, 64, &mut u);
        assert_eq!(h.iter().zip(&u).map(|(&c, &x)| c * x as u64).sum::<u64>(), huffman);
        assert!(bits >= huffman);
    }

    #[test]
    fn canonical_codes_example() {
        let mut l = [0u8; SYMBOLS];
        l[5] = 1;
        l[2] = 2;
        l[7] = 3;
        l[1] = 3;
        let c = canonical_codes(&l);
        assert_eq!((c[5], c[2], c[1], c[7]), (0b0, 0b10, 0b110, 0b111));
    }
}

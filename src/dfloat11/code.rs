//! Prefix codes DFloat11's decoder can read, and its lookup tables (`luts`).
//!
//! DFloat11's kernel decodes a code with at most four byte-indexed lookups
//! (root table, then up to three sub-table levels), and a table entry `>= 240`
//! is a pointer, so there are at most 16 sub-tables and no code is longer than
//! 32 bits (tests/fixtures/dfloat11/FORMAT.md §5). DFloat11's own encoder does
//! not check the table count; this one builds a code that always fits:
//!
//! 1. The optimal code limited to 32 bits (package-merge, shared with the df11
//!    encoder). Real weight histograms almost always fit as they are.
//! 2. Otherwise the cheapest fitting code among two families: package-merge
//!    limited to 31..=8 bits (8 bits always fits: at most 240 symbols, no
//!    sub-table), and "escape" codes, where the `j` most frequent symbols share
//!    an 8-bit root code with `m <= 16` escape leaves and each escape leaf holds
//!    a group of the rarer symbols in one sub-table. The second family handles
//!    many rare symbols, which plain length limiting spreads over too many
//!    sub-tables.
//!
//! Codes are canonical (shortest first, then by symbol), which puts the long
//! codes at the top of the code space and so shares sub-tables as much as the
//! lengths allow. The number of sub-tables is counted on the real assignment.

use df11_host::encode::huffman::code_lengths;

/// Symbols of the 8-bit exponent alphabet.
const SYMBOLS: usize = 256;
/// The longest code DFloat11's four lookups can resolve.
pub const MAX_CODE_LEN: u8 = 32;
/// Sub-tables that pointer values 240..=255 can address.
pub const MAX_SUBTABLES: usize = 16;
/// The smallest exponent that cannot be stored: LUT values from here on are pointers.
pub const FIRST_UNENCODABLE: u8 = super::POINTER_MIN;

/// A canonical prefix code over exponents `0..240`: per symbol its length
/// (0 = absent) and its code value (the low `length` bits, sent most
/// significant first). Valid by construction: lengths of at most 32 bits
/// whose Kraft sum is at most 1, so the code is prefix-free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Code {
    lengths: [u8; SYMBOLS],
    codes: [u32; SYMBOLS],
}

impl Code {
    /// The code for an exponent histogram, within DFloat11's limits
    /// ([`Code::fits`] holds). `None` if a symbol `>= 240` occurs: DFloat11
    /// cannot store those exponents.
    pub fn for_histogram(hist: &[u64; SYMBOLS]) -> Option<Code> {
        if hist[FIRST_UNENCODABLE as usize..].iter().any(|&c| c > 0) {
            return None;
        }
        Some(Code::canonical(&fitting_lengths(hist)))
    }

    /// The canonical code with these lengths. `None` if a length exceeds 32
    /// bits, a symbol `>= 240` has one, or the lengths break Kraft's inequality.
    pub fn from_lengths(lengths: &[u8; SYMBOLS]) -> Option<Code> {
        let kraft: u128 = lengths.iter().filter(|&&l| l > 0).map(|&l| 1u128 << (64 - l.min(64))).sum();
        let ok = lengths.iter().all(|&l| l <= MAX_CODE_LEN)
            && lengths[FIRST_UNENCODABLE as usize..].iter().all(|&l| l == 0)
            && kraft <= 1u128 << 64;
        ok.then(|| Code::canonical(lengths))
    }

    /// Code length in bits per symbol; 0 for symbols that do not occur.
    pub fn lengths(&self) -> &[u8; SYMBOLS] {
        &self.lengths
    }

    /// Code value per symbol (right-aligned).
    pub fn codes(&self) -> &[u32; SYMBOLS] {
        &self.codes
    }

    /// Canonical code values (shortest first, then by symbol) for valid lengths.
    fn canonical(lengths: &[u8; SYMBOLS]) -> Code {
        let mut codes = [0u32; SYMBOLS];
        // u64: after the last 32-bit code of a complete code the counter reaches 2^32.
        let mut next: u64 = 0;
        for len in 1..=MAX_CODE_LEN {
            for (s, &l) in lengths.iter().enumerate() {
                if l == len {
                    codes[s] = next as u32;
                    next += 1;
                }
            }
            next <<= 1;
        }
        Code { lengths: *lengths, codes }
    }

    /// How many sub-tables its LUTs need (distinct 8-, 16- and 24-bit prefixes
    /// of the codes longer than 8, 16 and 24 bits).
    pub fn subtables(&self) -> usize {
        self.prefixes().iter().map(Vec::len).sum()
    }

    /// Per level 1..=3, the sorted distinct prefixes that need a table there.
    fn prefixes(&self) -> [Vec<u32>; 3] {
        let mut out: [Vec<u32>; 3] = Default::default();
        for (&len, &code) in self.lengths.iter().zip(&self.codes) {
            let len = len as u32;
            for (k, level) in out.iter_mut().enumerate() {
                let bits = 8 * (k as u32 + 1);
                if len > bits {
                    level.push(code >> (len - bits));
                }
            }
        }
        for level in &mut out {
            level.sort_unstable();
            level.dedup();
        }
        out
    }

    /// Whether DFloat11's kernel can decode it.
    pub fn fits(&self) -> bool {
        self.lengths.iter().all(|&l| l <= MAX_CODE_LEN) && self.subtables() <= MAX_SUBTABLES
    }

    /// The `luts` array: the root row, the sub-tables (level 1, then 2, then 3,
    /// each by prefix), and the length row, 256 bytes each.
    ///
    /// Entries no code reaches (padding and garbage past the end only) hold
    /// the shortest code's symbol, so even a decoder running off the end of
    /// the data reads a symbol, never a dangling pointer. `None` if the code
    /// does not [fit](Code::fits).
    pub fn luts(&self) -> Option<Vec<u8>> {
        if !self.fits() {
            return None;
        }
        let prefixes = self.prefixes();
        let subtables: usize = prefixes.iter().map(Vec::len).sum();
        let rows = subtables + 2;
        let row_of = |level: usize, prefix: u32| -> usize {
            if level == 0 {
                return 0;
            }
            let before: usize = prefixes[..level - 1].iter().map(Vec::len).sum();
            1 + before + prefixes[level - 1].binary_search(&prefix).expect("every long code's prefix has a table")
        };
        let mut luts = vec![0u8; rows * 256];
        let mut set = vec![false; rows * 256];
        let mut put = |luts: &mut [u8], idx: usize, v: u8| {
            debug_assert!(!set[idx] || luts[idx] == v, "canonical codes are prefix-free");
            set[idx] = true;
            luts[idx] = v;
        };
        for (s, (&len, &code)) in self.lengths.iter().zip(&self.codes).enumerate() {
            if len == 0 {
                continue;
            }
            let len = len as u32;
            let level = ((len - 1) / 8) as usize;
            // Pointers along the way: table of level k-1 -> table of level k.
            for k in 1..=level {
                // (u64: a 32-bit code's level-0 "prefix" is a shift by 32.)
                let parent = row_of(k - 1, ((code as u64) >> (len - 8 * (k as u32 - 1))) as u32);
                let prefix = code >> (len - 8 * k as u32);
                let child = row_of(k, prefix);
                put(&mut luts, parent * 256 + (prefix & 0xFF) as usize, (256 - child) as u8);
            }
            let row = row_of(level, if level == 0 { 0 } else { code >> (len - 8 * level as u32) });
            let rest = len - 8 * level as u32;
            let tail = code & ((1u32 << rest) - 1);
            let first = (tail << (8 - rest)) as usize;
            for e in first..first + (1usize << (8 - rest)) {
                put(&mut luts, row * 256 + e, s as u8);
            }
        }
        let filler =
            (0..SYMBOLS).filter(|&s| self.lengths[s] > 0).min_by_key(|&s| (self.lengths[s], s)).map_or(0, |s| s as u8);
        for (v, was_set) in luts.iter_mut().zip(&set) {
            if !was_set {
                *v = filler;
            }
        }
        luts[(rows - 1) * 256..].copy_from_slice(&self.lengths);
        Some(luts)
    }
}

/// Total coded bits of `hist` with `lengths`.
fn cost(hist: &[u64; SYMBOLS], lengths: &[u8; SYMBOLS]) -> u128 {
    hist.iter().zip(lengths).map(|(&c, &l)| c as u128 * l as u128).sum()
}

/// Code lengths for `hist` that fit DFloat11's decoder (see the module docs).
fn fitting_lengths(hist: &[u64; SYMBOLS]) -> [u8; SYMBOLS] {
    let present: Vec<usize> = (0..SYMBOLS).filter(|&s| hist[s] > 0).collect();
    let mut lengths = [0u8; SYMBOLS];
    if present.len() == 1 {
        // A one-symbol alphabet still needs a 1-bit code to advance the stream.
        lengths[present[0]] = 1;
        return lengths;
    }
    if present.is_empty() {
        return lengths;
    }
    let fits = |l: &[u8; SYMBOLS]| Code::canonical(l).fits();
    let best = code_lengths(hist, MAX_CODE_LEN as u32);
    if fits(&best) {
        return best;
    }
    let mut best: Option<(u128, [u8; SYMBOLS])> = None;
    let mut consider = |l: [u8; SYMBOLS]| {
        let c = cost(hist, &l);
        if best.as_ref().is_none_or(|(b, _)| c < *b) && fits(&l) {
            best = Some((c, l));
        }
    };
    for limit in 8..MAX_CODE_LEN as u32 {
        consider(code_lengths(hist, limit));
    }
    // Escape codes: symbols by decreasing count, `j` in the root, the rest in `m` groups.
    let mut order = present.clone();
    order.sort_by_key(|&s| (std::cmp::Reverse(hist[s]), s));
    let n = order.len();
    for j in 0..n {
        for m in 1..=MAX_SUBTABLES.min(n - j) {
            consider(escape_lengths(hist, &order, j, m));
        }
    }
    best.expect("an 8-bit code always fits").1
}

/// The escape code with the first `j` symbols of `order` in the root and the
/// others split into `m` contiguous groups, each behind one escape leaf.
fn escape_lengths(hist: &[u64; SYMBOLS], order: &[usize], j: usize, m: usize) -> [u8; SYMBOLS] {
    let tail = &order[j..];
    let groups: Vec<&[usize]> = (0..m).map(|g| &tail[g * tail.len() / m..(g + 1) * tail.len() / m]).collect();
    // Escape leaves use the never-coded symbols 240.. as stand-ins (m <= 16).
    let mut root = [0u64; SYMBOLS];
    for &s in &order[..j] {
        root[s] = hist[s];
    }
    for (g, members) in groups.iter().enumerate() {
        root[FIRST_UNENCODABLE as usize + g] = members.iter().map(|&s| hist[s]).sum();
    }
    let root_len = code_lengths(&root, 8);
    let mut lengths = [0u8; SYMBOLS];
    for &s in &order[..j] {
        lengths[s] = root_len[s];
    }
    for (g, members) in groups.iter().enumerate() {
        let escape = root_len[FIRST_UNENCODABLE as usize + g];
        if let [only] = members {
            lengths[*only] = escape;
            continue;
        }
        let mut sub = [0u64; SYMBOLS];
        for &s in *members {
            sub[s] = hist[s];
        }
        // At most 240 members, so 16 - escape >= 8 bits always suffice.
        let sub_len = code_lengths(&sub, 16 - escape as u32);
        for &s in *members {
            lengths[s] = escape + sub_len[s];
        }
    }
    lengths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kraft(lengths: &[u8; SYMBOLS]) -> u128 {
        lengths.iter().filter(|&&l| l > 0).map(|&l| 1u128 << (64 - l)).sum()
    }

    #[test]
    fn plain_histograms_keep_the_optimal_code() {
        let mut h = [0u64; SYMBOLS];
        for (s, c) in [(120, 1000u64), (121, 500), (119, 250), (122, 10), (3, 1)] {
            h[s] = c;
        }
        let code = Code::for_histogram(&h).unwrap();
        assert_eq!(code.lengths, code_lengths(&h, 32));
        h[240] = 1;
        assert!(Code::for_histogram(&h).is_none());
        assert_eq!(code.subtables(), 0);
    }

    #[test]
    fn many_rare_symbols_are_packed_into_few_tables() {
        // One dominant exponent and 200 rare ones: the unconstrained code needs
        // dozens of sub-tables (FORMAT.md §9 counts 72 for DFloat11's).
        let mut h = [0u64; SYMBOLS];
        for s in 0..200 {
            h[s + 1] = 3;
        }
        h[230] = 1 << 30;
        let optimal = Code::from_lengths(&code_lengths(&h, 32)).unwrap();
        assert!(optimal.subtables() > MAX_SUBTABLES);
        assert!(optimal.luts().is_none());
        let code = Code::for_histogram(&h).unwrap();
        assert!(code.fits());
        assert_eq!(code.lengths[230], 1, "the dominant symbol keeps its 1-bit code");
        assert!(kraft(&code.lengths) <= 1u128 << 64);
        let rows = code.luts().unwrap().len() / 256;
        assert!(rows <= MAX_SUBTABLES + 2);
    }

    #[test]
    fn deep_chains_are_capped_at_32_bits() {
        // Fibonacci counts: the unlimited Huffman tree is 40 deep.
        let mut h = [0u64; SYMBOLS];
        let (mut a, mut b) = (1u64, 1u64);
        for s in 0..41 {
            h[80 + s] = a;
            (a, b) = (b, a + b);
        }
        let code = Code::for_histogram(&h).unwrap();
        assert!(code.fits());
        assert_eq!(code.lengths.iter().max(), Some(&32));
        assert!(code.luts().is_some());
    }

    #[test]
    fn luts_layout() {
        // A hand-checkable code: 5 -> `0`, 6 -> `10`, 7 -> `110`, 8 -> `111`.
        let mut l = [0u8; SYMBOLS];
        l[5] = 1;
        l[6] = 2;
        l[7] = 3;
        l[8] = 3;
        let c = Code::from_lengths(&l).unwrap();
        let luts = c.luts().unwrap();
        assert_eq!(luts.len(), 512);
        assert!(luts[..128].iter().all(|&v| v == 5));
        assert!(luts[128..192].iter().all(|&v| v == 6));
        assert!(luts[192..224].iter().all(|&v| v == 7));
        assert!(luts[224..256].iter().all(|&v| v == 8));
        assert_eq!(&luts[256 + 5..256 + 9], &[1, 2, 3, 3]);
        // A 9-bit code goes to a level-1 table behind pointer 255.
        let mut l = [0u8; SYMBOLS];
        l[1] = 1;
        l[2..=128].fill(8);
        l[129] = 9;
        l[130] = 9;
        let c = Code::from_lengths(&l).unwrap();
        assert_eq!(kraft(&l), 1u128 << 64);
        let luts = c.luts().unwrap();
        assert_eq!(luts.len(), 3 * 256);
        assert_eq!(luts[255], 255);
        assert!(luts[256..384].iter().all(|&v| v == 129));
        assert!(luts[384..512].iter().all(|&v| v == 130));
        assert_eq!(&luts[512 + 128..512 + 131], &[8, 9, 9]);
        // Invalid lengths are refused, not turned into a broken code.
        l[131] = 9;
        assert!(Code::from_lengths(&l).is_none(), "Kraft sum above 1");
        let mut l = [0u8; SYMBOLS];
        l[0] = 33;
        assert!(Code::from_lengths(&l).is_none());
        l[0] = 1;
        l[245] = 1;
        assert!(Code::from_lengths(&l).is_none());
    }
}

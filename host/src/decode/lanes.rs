//! The CPU decoder for the lanes layout (`docs/FORMAT.md` section 8).
//!
//! Each lane's stream is stored whole, so lanes are independent: four are
//! decoded in one loop for instruction-level parallelism, each lookup of the
//! 12-bit table yields up to five exponents (a multi-symbol table), and a
//! lane's bit buffer is refilled once per four lookups without a branch. The
//! exponents land in per-lane buffers, a chunk of rows at a time, small
//! enough to stay in the L2 cache; `super::join` then merges them with the
//! sign+mantissa bytes.
//!
//! Safety against corrupt input: the round loop (`rounds4`, the one `unsafe`
//! loop) runs only as many rounds as its lane buffers and the stream can take
//! whatever the codes, a bound checked before each batch of rounds; outside
//! it, stream reads are clamped to the tensor's stream bytes (past the end
//! they read zeros) and lane buffers are indexed through masks. A lane that
//! does not end exactly in its last word, followed by zero bits, makes the
//! segment `CorruptStream`.

use super::join::{Output, join_rows, stored};
use super::join9::join9_rows;
use crate::container::lane_slots;
use df11_gpu::format::{LANE_RUN, LANES, MAX_CODE_LEN, ROW_ELEMS, TABLE_BITS, TABLE_SIZE};
use df11_gpu::table::{Entry, Entry9, entry_len, entry_symbol, entry9_len, entry9_symbol};

/// Exponents a lookup of the lanes layout yields at most: five of its 8-byte
/// entries' bytes.
const LANES_PER_LOOKUP: usize = 5;

/// Symbols a multi-symbol lookup yields at most, of any [`Sym`] (lanes9
/// takes four): the most a lane buffer may hold past a chunk's end.
const MAX_PER_LOOKUP: usize = LANES_PER_LOOKUP;

/// Bits a lookup consumes at most.
const LOOKUP_BITS: u32 = MAX_CODE_LEN;

/// Rows decoded per chunk: each lane then decodes at most 4,096 exponents
/// into its buffer before the join pass reads them back, so the buffers
/// (128 KiB in all) stay in the L2 cache.
const CHUNK_ROWS: usize = 512;

/// Exponents of one lane in a chunk.
const CHUNK_SYMS: usize = CHUNK_ROWS * LANE_RUN;

/// Lane buffer index mask: a power of two above `CHUNK_SYMS + 4`, the most a
/// lane holds (it may overshoot a chunk by up to `MAX_PER_LOOKUP - 1`
/// symbols).
const LANE_MASK: usize = 2 * CHUNK_SYMS - 1;

/// Lane buffer size: every masked index plus an 8-byte store fits, and one
/// cache line more, so that consecutive lanes' buffers start 64 bytes apart
/// modulo 4 KiB. With a multiple of 4 KiB they would all map to the same L1
/// cache sets, and the join pass, which reads all 32 lanes' bytes of a row,
/// would evict its own lines (measured: 5% slower decoding).
pub(super) const LANE_BUF: usize = LANE_MASK + 1 + 64;

/// What a lane buffer holds per symbol: an exponent byte ([`stored`]) for
/// the lanes layout, `symbol << 6` for lanes9. Each has its join pass.
pub(super) trait Sym: Copy + Default + Send + 'static {
    /// A multi-symbol table entry's symbols, 8 bytes: one load, one store.
    type Group: Copy + Default + AsRef<[Self]> + AsMut<[Self]>;

    /// Symbols a lookup yields at most (at most [`MAX_PER_LOOKUP`]).
    const PER_LOOKUP: usize;

    /// A table entry's meta word: `u8` while the count minus one fits in
    /// two bits, so that lanes9's table stays 36 KiB.
    type Meta: Copy + Default + Into<u32> + TryFrom<u32>;

    /// Joins a chunk's symbols with its raw bytes (`raw`, from the chunk's
    /// first element on) into `out`, or compares them with `want` if that
    /// is not empty; see `join_rows` and `join9_rows`.
    fn join<const CRC: bool>(
        bufs: &[[Self; LANE_BUF]; LANES],
        raw: &[u8],
        out: &mut [u16],
        want: &[u16],
        how: &mut Output<'_>,
    );

    /// Raw bytes of the first `elems` elements of a segment.
    fn raw_len(elems: usize) -> usize;
}

impl Sym for u8 {
    type Group = [u8; 8];
    const PER_LOOKUP: usize = LANES_PER_LOOKUP;
    type Meta = u16;

    #[inline(always)]
    fn join<const CRC: bool>(
        bufs: &[[u8; LANE_BUF]; LANES],
        raw: &[u8],
        out: &mut [u16],
        want: &[u16],
        how: &mut Output<'_>,
    ) {
        join_rows::<CRC>(bufs, raw, out, want, how)
    }

    fn raw_len(elems: usize) -> usize {
        elems
    }
}

impl Sym for u16 {
    type Group = [u16; 4];
    const PER_LOOKUP: usize = 4;
    type Meta = u8;

    #[inline(always)]
    fn join<const CRC: bool>(
        bufs: &[[u16; LANE_BUF]; LANES],
        raw: &[u8],
        out: &mut [u16],
        want: &[u16],
        how: &mut Output<'_>,
    ) {
        join9_rows::<CRC>(bufs, raw, out, want, how)
    }

    fn raw_len(elems: usize) -> usize {
        df11_gpu::bits::raw9_len(elems as u64) as usize
    }
}

/// The multi-symbol decode table: for each 12-bit window, the symbols of
/// the whole codes it starts with (at most `S::PER_LOOKUP`), their count and
/// their bits.
pub(super) struct MultiTable<S: Sym> {
    /// The symbols as the lane buffers store them, the first first.
    symbols: [S::Group; TABLE_SIZE],
    /// Bits 0..4: bits the codes take (a shift count, read modulo 64);
    /// bits 6..: their count minus one.
    meta: [S::Meta; TABLE_SIZE],
    /// The single-symbol table, for a lane's last few symbols: the symbol
    /// and its code's length.
    single: [(S, u8); TABLE_SIZE],
}

impl<S: Sym> MultiTable<S> {
    /// The table of a code whose single-symbol table entry `i` is
    /// `single(i)`: the symbol as the lane buffers store it and its code's
    /// length, 1..=12 bits (a code of `max_len` ≥ 1).
    ///
    /// Built window by window from earlier ones, about twice as fast as
    /// decoding each window's codes afresh, which took a third of the
    /// decoding time of a 147K-weight tensor. Window `idx`'s codes are its
    /// first code, of `len` bits, then those codes of window `rest = idx <<
    /// len` (its bits after that code, zeros after them) that end within
    /// `12 - len` bits: a code of `rest` that ends there reads no bit past
    /// `idx`'s end. `rest` has more trailing zeros than `idx`, or is 0, so
    /// windows are built by decreasing trailing zeros, window 0 first.
    fn from_windows(single: impl Fn(usize) -> (S, u8)) -> Box<Self> {
        let mut t = Box::new(MultiTable {
            symbols: [S::Group::default(); TABLE_SIZE],
            meta: [S::Meta::default(); TABLE_SIZE],
            single: [(S::default(), 0); TABLE_SIZE],
        });
        for (idx, to) in t.single.iter_mut().enumerate() {
            *to = single(idx);
            debug_assert!((1..=MAX_CODE_LEN as u8).contains(&to.1));
        }
        // Byte `i` of `ends[idx]`: the bits of window `idx`'s first `i + 1`
        // codes, 0xFF past its count. In a register, not an array: stores of
        // single bytes read back as one word stall the build.
        let mut ends = vec![0u64; TABLE_SIZE];
        let bytes = |n: usize| (1u64 << (8 * n)) - 1;
        let mut set = |t: &mut Self, idx: usize, rest: Option<usize>| {
            let (sym, len) = t.single[idx];
            let (count, group, e) = match rest {
                Some(rest) => {
                    // The codes of `rest` that end within the room left
                    // (its ends increase, and 0xFF never fits).
                    let room = MAX_CODE_LEN as u8 - len;
                    let rest_ends = ends[rest];
                    let taken = (0..S::PER_LOOKUP - 1).take_while(|&i| (rest_ends >> (8 * i)) as u8 <= room).count();
                    let mut group = S::Group::default();
                    let from = t.symbols[rest];
                    for (i, to) in group.as_mut().iter_mut().enumerate() {
                        *to = match i {
                            0 => sym,
                            i if i <= taken => from.as_ref()[i - 1],
                            _ => S::default(),
                        };
                    }
                    // Ends are at most 24, so the bytes add without carries.
                    let moved = (rest_ends & bytes(taken)) + len as u64 * (0x0101_0101_0101_0101 & bytes(taken));
                    (taken + 1, group, moved << 8 | len as u64 | !bytes(taken + 1))
                }
                // Window 0 holds its first code again and again.
                None => {
                    let count = (MAX_CODE_LEN as usize / len as usize).min(S::PER_LOOKUP);
                    let mut group = S::Group::default();
                    group.as_mut()[..count].fill(sym);
                    let e = (0..count).fold(!bytes(count), |e, i| e | ((i as u64 + 1) * len as u64) << (8 * i));
                    (count, group, e)
                }
            };
            t.symbols[idx] = group;
            t.meta[idx] = Self::meta((e >> (8 * (count - 1))) as u8 as u32, count as u32);
            ends[idx] = e;
        };
        set(&mut t, 0, None);
        for zeros in (0..TABLE_BITS).rev() {
            for idx in ((1usize << zeros)..TABLE_SIZE).step_by(2 << zeros) {
                let rest = (idx << t.single[idx].1) & (TABLE_SIZE - 1);
                set(&mut t, idx, Some(rest));
            }
        }
        t
    }

    /// The meta word of `count` ≥ 1 codes taking `used` bits.
    fn meta(used: u32, count: u32) -> S::Meta {
        S::Meta::try_from(used | ((count - 1) << 6)).ok().expect("the count fits the meta word")
    }

    /// The table from each window's codes decoded afresh, `multi(idx)`:
    /// `(symbols, count, bits)`; what [`MultiTable::from_windows`] is
    /// tested against.
    #[cfg(test)]
    fn from_codes(multi: impl Fn(usize) -> (S::Group, u32, u32), single: impl Fn(usize) -> (S, u8)) -> Box<Self> {
        let mut t = Box::new(MultiTable {
            symbols: [S::Group::default(); TABLE_SIZE],
            meta: [S::Meta::default(); TABLE_SIZE],
            single: [(S::default(), 0); TABLE_SIZE],
        });
        for idx in 0..TABLE_SIZE {
            let (symbols, count, used) = multi(idx);
            t.symbols[idx] = symbols;
            t.meta[idx] = Self::meta(used, count);
            t.single[idx] = single(idx);
        }
        t
    }
}

impl MultiTable<u8> {
    /// Builds the table from the single-symbol table of a code with
    /// `max_len` ≥ 1 (every entry decodes a code of 1..=12 bits).
    pub(super) fn new(single: &[Entry; TABLE_SIZE]) -> Box<Self> {
        Self::from_windows(|idx| (stored(entry_symbol(single[idx])), entry_len(single[idx]) as u8))
    }

    /// [`MultiTable::new`] one window at a time, with `table::multi_entry_n`.
    #[cfg(test)]
    fn new_direct(single: &[Entry; TABLE_SIZE]) -> Box<Self> {
        use df11_gpu::table::multi_entry_n;
        Self::from_codes(
            |idx| {
                let (exps, count, used) = multi_entry_n::<LANES_PER_LOOKUP>(single, idx);
                let mut group = [0; 8];
                group[..LANES_PER_LOOKUP].copy_from_slice(&exps.map(stored));
                (group, count, used)
            },
            |idx| (stored(entry_symbol(single[idx])), entry_len(single[idx]) as u8),
        )
    }
}

impl MultiTable<u16> {
    /// [`MultiTable::new`] for a lanes9 code: symbols stored `<< 6`, in place
    /// in a bf16.
    pub(super) fn new9(single: &[Entry9; TABLE_SIZE]) -> Box<Self> {
        Self::from_windows(|idx| (entry9_symbol(single[idx]) << 6, entry9_len(single[idx]) as u8))
    }

    /// [`MultiTable::new9`] one window at a time, with `table::multi_entry9`.
    #[cfg(test)]
    fn new9_direct(single: &[Entry9; TABLE_SIZE]) -> Box<Self> {
        use df11_gpu::table::multi_entry9;
        Self::from_codes(
            |idx| {
                let (syms, count, cumulative) = multi_entry9(single, idx);
                (syms.map(|s| s << 6), count, cumulative >> 12)
            },
            |idx| (entry9_symbol(single[idx]) << 6, entry9_len(single[idx]) as u8),
        )
    }
}

/// Per-lane symbol buffers, reused across segments and calls.
pub(super) struct LaneBufs<S>(pub(super) Box<[[S; LANE_BUF]; LANES]>);

impl<S: Sym> LaneBufs<S> {
    pub(super) fn new() -> Self {
        LaneBufs(vec![[S::default(); LANE_BUF]; LANES].into_boxed_slice().try_into().ok().expect("LANES buffers"))
    }
}

/// The tensor's stream bytes, readable 8 at a time anywhere: past the end
/// they read as zeros.
pub(super) struct Stream<'a> {
    bytes: &'a [u8],
    /// `bytes.len() - 8`: the last position an 8-byte load may start at.
    last: usize,
}

impl<'a> Stream<'a> {
    /// `bytes` must hold at least 8 bytes.
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        assert!(bytes.len() >= 8, "stream buffers are padded to 8 bytes");
        Stream { bytes, last: bytes.len() - 8 }
    }

    /// The 64 stream bits from bit `pos`, MSB-first, zeros past the end.
    #[inline(always)]
    fn bits_at(&self, pos: usize) -> u64 {
        let at = (pos >> 3).min(self.last);
        let x = u64::from_be_bytes(self.bytes[at..at + 8].try_into().unwrap());
        // Past the end `pos - 8·at` exceeds 7; beyond 63 no real bit is left.
        // Such a lane is corrupt and is rejected by its end check.
        let shift = pos - 8 * at;
        if shift < 64 { x << shift } else { 0 }
    }
}

/// Bits of [`Lane::at`] below the stream position: the exponent count.
const HAVE_BITS: u32 = 16;

/// A lane's decoder state, two registers.
#[derive(Clone, Copy)]
struct Lane {
    /// The next bits, MSB-aligned, and a single 1 (the sentinel) that
    /// starts at bit 0 at a refill and rises with every bit consumed, zeros
    /// below it: the bits consumed since the last refill are its
    /// `trailing_zeros`. A refill leaves at least 57 valid bits (a load
    /// shifted by under 8), and at most 48 are consumed before the next, so
    /// the sentinel never reaches them.
    buf: u64,
    /// `pos << 16 | have`: the stream position of `buf`'s top bit at the last
    /// refill, and the exponents in the lane's buffer (below 2^13), packed so
    /// that four lanes' state fits in the registers of the decoding loop.
    at: usize,
}

impl Lane {
    fn new(start_bit: usize) -> Self {
        // Only the sentinel: the first refill starts at `start_bit`.
        Lane { buf: 1, at: start_bit << HAVE_BITS }
    }

    /// Exponents in the lane's buffer.
    #[inline(always)]
    fn have(&self) -> usize {
        self.at & ((1 << HAVE_BITS) - 1)
    }

    /// The stream position of the next unread bit.
    #[inline(always)]
    fn bit(&self) -> usize {
        (self.at >> HAVE_BITS) + self.buf.trailing_zeros() as usize
    }

    /// Moves the position to the next unread bit and returns it.
    #[inline(always)]
    fn advance(&mut self) -> usize {
        // The sentinel is at bit 48 at most, so `| 1 << 63` changes nothing
        // but tells the compiler the count is below 64.
        let consumed = (self.buf | 1 << 63).trailing_zeros() as usize;
        self.at += consumed << HAVE_BITS;
        self.at >> HAVE_BITS
    }

    /// Reloads `buf` from the next unread bit, the sentinel at bit 0.
    #[inline(always)]
    fn refill(&mut self, s: &Stream) {
        let pos = self.advance();
        self.buf = s.bits_at(pos) | 1;
    }

    /// One multi-symbol lookup: up to `S::PER_LOOKUP` symbols into `out` at
    /// `have`.
    #[inline(always)]
    fn lookup<S: Sym>(&mut self, t: &MultiTable<S>, out: &mut [S; LANE_BUF]) {
        let idx = (self.buf >> (64 - LOOKUP_BITS)) as usize;
        let m: u32 = t.meta[idx].into();
        let at = self.at & LANE_MASK;
        let group = t.symbols[idx];
        out[at..at + group.as_ref().len()].copy_from_slice(group.as_ref());
        self.buf = self.buf.wrapping_shl(m);
        self.at += (m >> 6) as usize + 1;
    }

    /// One single-symbol lookup, for a lane's last symbols.
    #[inline(always)]
    fn lookup_one<S: Sym>(&mut self, t: &MultiTable<S>, out: &mut [S; LANE_BUF]) {
        let (sym, len) = t.single[(self.buf >> (64 - LOOKUP_BITS)) as usize];
        out[self.at & LANE_MASK] = sym;
        self.buf <<= len;
        self.at += 1;
    }

    /// Decodes until the lane holds at least `target` exponents, and never
    /// more than `limit` (its exponents left in the segment): no code may be
    /// read past a lane's last one.
    #[inline(always)]
    fn finish<S: Sym>(&mut self, t: &MultiTable<S>, s: &Stream, out: &mut [S; LANE_BUF], target: usize, limit: usize) {
        while self.have() < target {
            self.refill(s);
            if limit - self.have() >= S::PER_LOOKUP {
                self.lookup(t, out);
            } else {
                self.lookup_one(t, out);
            }
        }
    }
}

/// Decodes four lanes until each holds at least its `target` exponents, but
/// at most its `limit`.
///
/// Rounds of one refill and four lookups per lane run while even the
/// furthest-behind lane can take a whole round without passing its target (a
/// round yields at most `4 · S::PER_LOOKUP` exponents a lane; 4 lookups take at most 48 of
/// the 57 or more bits a refill provides), and while every refill's 8 bytes are
/// inside the stream. Then each lane finishes on its own. The rounds
/// prefetch the two byte ranges of `[ahead, fetch]`, a line of each a round.
#[inline(always)]
fn decode4<S: Sym>(
    t: &MultiTable<S>,
    s: &Stream,
    lanes: &mut [Lane; 4],
    bufs: &mut [[S; LANE_BUF]; 4],
    target: [usize; 4],
    limit: [usize; 4],
    [mut ahead, mut fetch]: [&[u8]; 2],
) {
    let round = 4 * S::PER_LOOKUP;
    const ROUND_BITS: usize = 4 * LOOKUP_BITS as usize;
    loop {
        let by_target = (0..4).map(|i| target[i].saturating_sub(lanes[i].have())).min().unwrap_or(0) / round;
        // Round k's refill reads 8 bytes from bit `bit + k·48` at most.
        let furthest = lanes.iter().map(Lane::bit).max().unwrap_or(0);
        let by_stream = (8 * s.bytes.len()).saturating_sub(furthest + 64) / ROUND_BITS;
        let rounds = by_target.min(by_stream);
        if rounds == 0 {
            break;
        }
        // SAFETY: `rounds` is bounded as `rounds4` requires: by the targets
        // (at most CHUNK_SYMS exponents in a buffer after the rounds, and
        // LANE_BUF has room for a whole group more)
        // and by the stream's length.
        unsafe { rounds4(t, s, lanes, bufs, rounds, ahead, fetch) };
        ahead = ahead.get(rounds * 64..).unwrap_or(&[]);
        fetch = fetch.get(rounds * 64..).unwrap_or(ahead);
    }
    for (i, (lane, buf)) in lanes.iter_mut().zip(bufs.iter_mut()).enumerate() {
        lane.finish(t, s, buf, target[i], limit[i]);
    }
}

/// `rounds` rounds of one refill and four lookups for each of four lanes;
/// round `r` also prefetches the cache lines `64·r` bytes after `ahead`'s and
/// `fetch`'s starts (`fetch`: the output a compare expects, or `ahead` again).
///
/// # Safety
/// Each lane's buffer must have room for `4 · S::PER_LOOKUP · rounds` more
/// symbols after its `have` ones and then one `S::Group`, and each refill's 8 bytes must be inside the stream:
/// `bit + 48 · (rounds - 1) + 64 ≤ 8 · stream length` for each lane.
#[inline(always)]
unsafe fn rounds4<S: Sym>(
    t: &MultiTable<S>,
    s: &Stream,
    lanes: &mut [Lane; 4],
    bufs: &mut [[S; LANE_BUF]; 4],
    rounds: usize,
    ahead: &[u8],
    fetch: &[u8],
) {
    let stream = s.bytes.as_ptr();
    let mut buf = lanes.map(|l| l.buf);
    let mut pos = lanes.map(|l| l.at >> HAVE_BITS);
    let starts: [*mut S; 4] = std::array::from_fn(|i| bufs[i].as_mut_ptr());
    // SAFETY: `have` is within the buffer (the caller's bound).
    let mut out: [*mut S; 4] = std::array::from_fn(|i| unsafe { starts[i].add(lanes[i].have()) });
    let (ahead, fetch) = (ahead.as_ptr(), fetch.as_ptr());
    for r in 0..rounds {
        // Past `ahead`'s end this fetches the next group's bytes, or harmlessly
        // nothing: not bounding it keeps a register free for the lanes.
        crate::hint::prefetch_line(ahead.wrapping_add(64 * r));
        crate::hint::prefetch_line(fetch.wrapping_add(64 * r));
        for i in 0..4 {
            pos[i] += buf[i].trailing_zeros() as usize;
            // SAFETY: in the stream, by the caller's bound on `rounds`.
            let x = u64::from_be(unsafe { stream.add(pos[i] >> 3).cast::<u64>().read_unaligned() });
            buf[i] = x << (pos[i] & 7) | 1;
        }
        for _ in 0..4 {
            for i in 0..4 {
                let idx = (buf[i] >> (64 - LOOKUP_BITS)) as usize;
                let m: u32 = t.meta[idx].into();
                // SAFETY: within the lane's buffer, by the caller's bound:
                // each lookup advances `out` by at most `S::PER_LOOKUP`.
                unsafe {
                    out[i].cast::<S::Group>().write_unaligned(t.symbols[idx]);
                    out[i] = out[i].add((m >> 6) as usize + 1);
                }
                buf[i] = buf[i].wrapping_shl(m);
            }
        }
    }
    for i in 0..4 {
        // SAFETY: both pointers are into the same buffer.
        let have = unsafe { out[i].offset_from(starts[i]) } as usize;
        lanes[i] = Lane { buf: buf[i], at: pos[i] << HAVE_BITS | have };
    }
}

/// Decodes one segment of the lanes layout into `out` (its `seg_len`
/// elements). `starts` holds the segment's 32 lane start words and the next
/// segment's first one. Returns `false` if a lane's stream does not end
/// exactly in its last word, followed only by zero bits.
///
/// `how` says how the output is written (see [`Output`]).
pub(super) fn decode_segment<S: Sym>(
    t: &MultiTable<S>,
    s: &Stream,
    starts: &[u32],
    sm: &[u8],
    out: &mut [u16],
    bufs: &mut LaneBufs<S>,
    how: &mut Output<'_>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("bmi1")
        && std::is_x86_feature_detected!("bmi2")
        && std::is_x86_feature_detected!("movbe")
    {
        // SAFETY: the CPU has BMI1, BMI2 and MOVBE, the features the function enables.
        return unsafe {
            if how.crc.is_some() {
                decode_segment_bmi2::<true, S>(t, s, starts, sm, out, bufs, how)
            } else {
                decode_segment_bmi2::<false, S>(t, s, starts, sm, out, bufs, how)
            }
        };
    }
    if how.crc.is_some() {
        decode_segment_impl::<true, S>(t, s, starts, sm, out, bufs, how)
    } else {
        decode_segment_impl::<false, S>(t, s, starts, sm, out, bufs, how)
    }
}

/// [`decode_segment`] with BMI2's shifts (any register holds the count, where
/// the baseline x86-64 shifts need it in `cl`), BMI1's `tzcnt` (defined for
/// zero, where `bsf` needs a default loaded first) and MOVBE's byte-swapping
/// loads of the big-endian stream.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi1,bmi2,movbe")]
fn decode_segment_bmi2<const CRC: bool, S: Sym>(
    t: &MultiTable<S>,
    s: &Stream,
    starts: &[u32],
    sm: &[u8],
    out: &mut [u16],
    bufs: &mut LaneBufs<S>,
    how: &mut Output<'_>,
) -> bool {
    decode_segment_impl::<CRC, S>(t, s, starts, sm, out, bufs, how)
}

/// [`decode_segment`]'s body, compiled for each CPU feature set, and with
/// `CRC` (`how.crc` is some) or without: one loop each, so that the one
/// without keeps exactly the code it has alone.
#[inline(always)]
fn decode_segment_impl<const CRC: bool, S: Sym>(
    t: &MultiTable<S>,
    s: &Stream,
    starts: &[u32],
    sm: &[u8],
    out: &mut [u16],
    bufs: &mut LaneBufs<S>,
    how: &mut Output<'_>,
) -> bool {
    // The carry-over below moves MAX_PER_LOOKUP symbols.
    const { assert!(S::PER_LOOKUP <= MAX_PER_LOOKUP) };
    let seg_len = out.len();
    let expect: &[u8] = bytemuck::cast_slice(how.expect);
    let slots: [usize; LANES] = std::array::from_fn(|j| lane_slots(seg_len, j));
    let mut lanes: [Lane; LANES] = std::array::from_fn(|j| Lane::new(32 * starts[j] as usize));
    let rows = seg_len.div_ceil(ROW_ELEMS);
    for chunk_start in (0..rows).step_by(CHUNK_ROWS) {
        let chunk_rows = (rows - chunk_start).min(CHUNK_ROWS);
        let first = chunk_start * LANE_RUN;
        let last_chunk = chunk_start + chunk_rows == rows;
        let elems = chunk_start * ROW_ELEMS..(seg_len).min((chunk_start + chunk_rows) * ROW_ELEMS);
        // Each group of lanes fetches an eighth of the chunk's raw bytes
        // into the cache while it decodes, for the join that follows.
        let raw = S::raw_len(elems.start)..S::raw_len(elems.end);
        let share = raw.len().div_ceil(LANES / 4);
        let fetch_share = (2 * elems.len()).div_ceil(LANES / 4);
        for (g, group) in bufs.0.as_chunks_mut::<4>().0.iter_mut().enumerate() {
            let l4: &mut [Lane; 4] = (&mut lanes[4 * g..4 * g + 4]).try_into().unwrap();
            let limit = std::array::from_fn(|i| slots[4 * g + i] - first);
            let target = limit.map(|l| l.min(CHUNK_SYMS));
            let ahead = sm.get(raw.start + g * share..raw.end.min(raw.start + (g + 1) * share)).unwrap_or(&[]);
            // And an eighth of the chunk's expected output, when comparing:
            // without it lanes9's compare waited on it (MiniLM's verify took
            // 12 % longer; lanes did not gain).
            let fetch = expect.get(2 * elems.start + g * fetch_share..).unwrap_or(&[]);
            let fetch = if fetch.is_empty() { ahead } else { fetch };
            decode4(t, s, l4, group, target, limit, [ahead, fetch]);
        }
        let want = if how.expect.is_empty() { &[][..] } else { &how.expect[elems.clone()] };
        S::join::<CRC>(&bufs.0, &sm[raw], &mut out[elems], want, how);
        if !last_chunk {
            // Up to `S::PER_LOOKUP - 1` symbols past the chunk move to the
            // buffer's start.
            for (lane, buf) in lanes.iter_mut().zip(bufs.0.iter_mut()) {
                buf.copy_within(CHUNK_SYMS..CHUNK_SYMS + MAX_PER_LOOKUP, 0);
                lane.at -= CHUNK_SYMS;
            }
        }
    }
    // Each lane must end in its last word, and the rest of that word be zero.
    lanes.iter().enumerate().all(|(j, lane)| {
        let end = lane.bit();
        let (from, to) = (32 * starts[j] as usize, 32 * starts[j + 1] as usize);
        let pad = to.wrapping_sub(end);
        end >= from && end <= to && pad < 32 && (pad == 0 || s.bits_at(end) >> (64 - pad) == 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::huffman::code_lengths;
    use crate::synth::SplitMix64;
    use df11_gpu::format::{SYMBOLS, SYMBOLS9};
    use df11_gpu::table::{build, build9};

    /// The tables built from earlier windows equal those built a window at
    /// a time, entry for entry, for both layouts, on codes of every shape:
    /// 1-bit codes (five a window), 12-bit codes (one), and realistic skews
    /// between.
    #[test]
    fn built_from_earlier_windows_as_from_scratch() {
        let mut rng = SplitMix64::new(3);
        let mut hists: Vec<[u64; SYMBOLS]> = Vec::new();
        for symbols in [2usize, 3, 5, 17, 256] {
            let mut h = [0; SYMBOLS];
            h[..symbols].fill(1);
            hists.push(h);
        }
        for _ in 0..40 {
            // Geometric-ish skews of random steepness at random places, and
            // a few rare symbols: lengths up to the 12-bit limit.
            let (base, steep) = (rng.next_u64() % 200, 1 + rng.next_u64() % 6);
            let mut h = [0; SYMBOLS];
            for (i, c) in h.iter_mut().enumerate().skip(base as usize).take(40) {
                *c = (1u64 << 40) >> (steep * (i as u64 - base)).min(40);
            }
            h[(rng.next_u64() % 256) as usize] += 1;
            hists.push(h);
        }
        for h in &hists {
            let lengths = code_lengths(h, MAX_CODE_LEN);
            let mut single = [0; TABLE_SIZE];
            assert!(build(&lengths, 0, &mut single).unwrap() >= 1);
            same(&MultiTable::new(&single), &MultiTable::new_direct(&single), &lengths);
            // The same lengths as a lanes9 code, on symbols 0..256 and,
            // shifted, on 256..512 (bit 8 set).
            for high in [0, SYMBOLS] {
                let mut lengths9 = [0; SYMBOLS9];
                lengths9[high..high + SYMBOLS].copy_from_slice(&lengths);
                let mut single9 = [0; TABLE_SIZE];
                assert!(build9(&lengths9, 0, &mut single9).unwrap() >= 1);
                same(&MultiTable::new9(&single9), &MultiTable::new9_direct(&single9), &lengths);
            }
        }
    }

    fn same<S: Sym + PartialEq + std::fmt::Debug>(fast: &MultiTable<S>, direct: &MultiTable<S>, lengths: &[u8])
    where
        S::Group: PartialEq + std::fmt::Debug,
        S::Meta: PartialEq + std::fmt::Debug,
    {
        for idx in 0..TABLE_SIZE {
            assert_eq!(
                (fast.symbols[idx], fast.meta[idx], fast.single[idx]),
                (direct.symbols[idx], direct.meta[idx], direct.single[idx]),
                "window {idx:#05x}, lengths {lengths:?}"
            );
        }
    }
}

//! The encoder of the warp layout (`docs/FORMAT.md` section 7), the GPU's.
//!
//! The decoder's 32 lanes share one word cursor: at each step every lane that
//! runs low on bits takes the next word, lanes in order. So a segment's words
//! are each lane's bit string cut into 32-bit words and dealt out in the
//! order of the refills. Which steps refill depends only on code lengths, so
//! each lane is coded on its own into a byte buffer, recording a byte of
//! refill flags per row, and the words are then gathered in refill order.
//!
//! Lanes are coded one at a time over a block of rows, so that a lane's
//! state stays in registers, with branch-free flushes and flag arithmetic.

use df11_gpu::format::{LANE_RUN, LANES, ROW_ELEMS, SYMBOLS};

/// Per 9-bit index `bits >> 7` (sign and exponent, so no mask is needed):
/// `code << 32 | len`, so that both a shift by the length (which takes the
/// count's low 6 bits) and a 32-bit addition of it need no mask.
pub(super) struct CodeTable([u64; 2 * SYMBOLS]);

impl CodeTable {
    pub(super) fn new(lengths: &[u8; SYMBOLS], codes: &[u32; SYMBOLS]) -> Self {
        CodeTable(std::array::from_fn(|i| (codes[i % SYMBOLS] as u64) << 32 | lengths[i % SYMBOLS] as u64))
    }

    #[inline(always)]
    fn get(&self, b: u16) -> u64 {
        self.0[(b >> 7) as usize]
    }
}

/// Bytes before each lane's stream in its slot of `Scratch::lane_bytes`:
/// a flush stores the 8 bytes that end with the current one, which reach up
/// to 7 bytes before the stream's start.
const HEAD: usize = 8;

/// Rows coded lane by lane at a time: 16 KiB of input.
const BLOCK_ROWS: usize = 32;

/// Buffers reused across the segments one worker encodes.
#[derive(Default)]
pub(super) struct Scratch {
    /// Lane `j`'s bit string, as big-endian bytes, from bit `max_len - 1` of
    /// `lane_bytes[j * cap + HEAD..(j + 1) * cap]` while a segment is encoded
    /// (so that the flushes can use `due` as the bit position, see `LaneState`).
    lane_bytes: Vec<u8>,
    /// Lane of each refill, in the order the decoder performs them, plus
    /// slack for the 8-byte stores of `push_refills`.
    refills: Vec<u8>,
}

/// Encodes one segment (up to `256·R` elements) into its interleaved words.
///
/// Lane by lane through blocks of rows, branch-free: the refill decisions and
/// the word boundaries are data dependent and would be mispredicted often.
/// Each lane run yields a byte of refill flags (bit 7 - k: refill at step k);
/// after the block they are put in the decoder's (row, k, lane) order.
pub(super) fn encode_segment(seg: &[u16], enc: &CodeTable, max_len: u32, sc: &mut Scratch) -> Vec<u32> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("bmi2") {
        // SAFETY: the CPU has BMI2, the only feature the function enables.
        return unsafe { encode_segment_bmi2(seg, enc, max_len, sc) };
    }
    encode_segment_impl(seg, enc, max_len, sc)
}

/// The same code with BMI2's shifts (`shlx`, `shrx`): any register holds the
/// count, where the baseline x86-64 shifts need it in `cl`, which costs moves
/// and register pressure in the coding loop (measured 5-8 % on the whole
/// encode, on AMD Zen 1).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2")]
fn encode_segment_bmi2(seg: &[u16], enc: &CodeTable, max_len: u32, sc: &mut Scratch) -> Vec<u32> {
    encode_segment_impl(seg, enc, max_len, sc)
}

/// [`encode_segment`]'s body, compiled for each CPU feature set.
#[inline(always)]
fn encode_segment_impl(seg: &[u16], enc: &CodeTable, max_len: u32, sc: &mut Scratch) -> Vec<u32> {
    let rows = seg.len().div_ceil(ROW_ELEMS);
    // A lane's bits, from bit max_len - 1, are at most rows·8·max_len + 11,
    // so its bytes rows·max_len + 2; 24 more cover the zeros after its end.
    let cap = HEAD + rows * max_len as usize + 26;
    // Only written bytes are ever read, so stale contents need no clearing.
    if sc.lane_bytes.len() < cap * LANES {
        sc.lane_bytes.resize(cap * LANES, 0);
    }
    sc.refills.clear();
    sc.refills.resize(rows * ROW_ELEMS + 8, 0);
    let mut num_refills = 0;
    let mut lanes = [LaneState::new(max_len); LANES];
    let mut flags = [[0u8; LANES]; BLOCK_ROWS];
    for block in seg.chunks(ROW_ELEMS * BLOCK_ROWS) {
        // Lane by lane through a block of rows, so that a lane's state stays
        // in registers; the block's input stays in the L1 cache meanwhile.
        // Only a tensor's last row can be partial (`tail`).
        let (full, tail) = block.as_chunks::<ROW_ELEMS>();
        for (j, st) in lanes.iter_mut().enumerate() {
            let out = &mut sc.lane_bytes[j * cap..(j + 1) * cap];
            let mut s = *st;
            for (row, f) in full.iter().zip(&mut flags) {
                let run: &[u16; LANE_RUN] = row[j * LANE_RUN..][..LANE_RUN].try_into().unwrap();
                f[j] = s.encode_run(run, enc, out);
            }
            *st = s;
        }
        let mut rows_done = full.len();
        if !tail.is_empty() {
            flags[rows_done] = [0; LANES];
            for ((j, st), run) in lanes.iter_mut().enumerate().zip(tail.chunks(LANE_RUN)) {
                flags[rows_done][j] = st.encode_run(run, enc, &mut sc.lane_bytes[j * cap..(j + 1) * cap]);
            }
            rows_done += 1;
        }
        for f in &flags[..rows_done] {
            num_refills = push_refills(f, &mut sc.refills, num_refills);
        }
    }
    // The decoder fetches at most one word past a lane's last partial word,
    // and reads zeros after its bits: 24 zero bytes after the last byte the
    // final flush stored cover both, and the 8-byte reads below.
    for (j, st) in lanes.iter().enumerate() {
        let end = j * cap + HEAD + st.due as usize / 8 + 1;
        sc.lane_bytes[end..end + 24].fill(0);
    }
    // Place each lane's words where the decoder fetches them.
    let bias = max_len as usize - 1;
    let mut next = [HEAD + bias / 8; LANES];
    sc.refills[..num_refills]
        .iter()
        .map(|&j| {
            let j = j as usize;
            let at = j * cap + next[j];
            next[j] += 4;
            let v = u64::from_be_bytes(sc.lane_bytes[at..at + 8].try_into().unwrap());
            (v >> (32 - bias % 8)) as u32
        })
        .collect()
}

/// Appends the lanes that refill in one row to `refills[n..]`, steps k = 0..8
/// in turn and lanes in increasing order within a step; returns the new length.
///
/// Branch-free: the flag bytes of 8 lanes are transposed as an 8×8 bit matrix,
/// so that byte 7 - k holds the 8 lanes' flags of step k, and each such byte's set
/// bits are appended with one 8-byte store from a table of positions.
fn push_refills(flags: &[u8; LANES], refills: &mut [u8], mut n: usize) -> usize {
    let (groups, _) = flags.as_chunks::<8>();
    let t: [[u8; 8]; LANES / 8] = std::array::from_fn(|g| transpose8(u64::from_le_bytes(groups[g])).to_le_bytes());
    for k in 0..LANE_RUN {
        for (g, tg) in t.iter().enumerate() {
            let m = tg[LANE_RUN - 1 - k] as usize;
            let lanes = SET_BITS[m] + 0x0101_0101_0101_0101 * (8 * g as u64);
            refills[n..n + 8].copy_from_slice(&lanes.to_le_bytes());
            n += BIT_COUNTS[m] as usize;
        }
    }
    n
}

/// Transposes an 8×8 bit matrix (byte i, bit j) → (byte j, bit i).
fn transpose8(mut x: u64) -> u64 {
    // Hacker's Delight 7-3: swap 1×1, 2×2, then 4×4 blocks across the diagonal.
    let t = (x ^ (x >> 7)) & 0x00aa_00aa_00aa_00aa;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_cccc_0000_cccc;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_f0f0_f0f0;
    x ^ t ^ (t << 28)
}

/// Per byte value: the positions of its set bits, in increasing order, one a
/// byte from the low byte up.
static SET_BITS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut m = 0;
    while m < 256 {
        let (mut n, mut b) = (0, 0);
        while b < 8 {
            if m >> b & 1 == 1 {
                t[m] |= (b as u64) << (8 * n);
                n += 1;
            }
            b += 1;
        }
        m += 1;
    }
    t
};

/// Per byte value: its number of set bits (a table: `count_ones` is a long
/// sequence of operations where the CPU baseline has no popcount instruction).
static BIT_COUNTS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut m = 0;
    while m < 256 {
        t[m] = (m as u8).count_ones() as u8;
        m += 1;
    }
    t
};

/// One lane's encoder state, carried from row to row.
#[derive(Clone, Copy)]
struct LaneState {
    /// The lane's most recent code bits, in the low bits (the last 64).
    acc: u64,
    /// `written + max_len - 1`, where `written` is the bits of the lane's
    /// stream so far: the bits the decoder has consumed.
    due: u32,
    /// `due / 32` at the last refill decision (-1 before the first): the
    /// decoder has then loaded `32 · (block + 1)` bits (see `encode_run`).
    block: u32,
}

impl LaneState {
    fn new(max_len: u32) -> Self {
        LaneState { acc: 0, due: max_len - 1, block: u32::MAX }
    }

    /// Encodes a lane's run of one row (steps k = 0.., one element each) into
    /// its stream `out` (`HEAD` bytes, then the stream's bytes), and returns
    /// its refill flags: bit 7 - k is set when the decoder refills at step k.
    #[inline(always)]
    fn encode_run(&mut self, run: &[u16], enc: &CodeTable, out: &mut [u8]) -> u8 {
        // FORMAT.md section 7 refills when `loaded - written < max_len`. As
        // codes are at most `max_len` bits, that keeps `loaded` the smallest
        // multiple of 32 that is at least `written + max_len`, so a refill
        // happens exactly when `due = written + max_len - 1` enters a new
        // 32-bit block: flag_k = block_k - block_{k-1} (0 or 1, as a code is
        // under 32 bits). This depends only on code lengths, so the word
        // order is fixed before the words' contents are known.
        //
        // The flags need no per-step bit insertion: with Horner's
        // x = Σ block_k·2^(n-1-k), one addition a step, the reversed flags
        // Σ flag_k·2^(n-1-k) telescope to
        // x - (x - block_{n-1}) / 2 - block_{-1}·2^(n-1).
        //
        // Checked once here, so that the flushes' bounds need no branch.
        assert!(out.len() >= 9);
        let mut x = 0u32;
        let mut last = self.block;
        for quad in run.chunks(4) {
            for &b in quad {
                let e = enc.get(b);
                last = self.due / 32;
                x = x.wrapping_mul(2).wrapping_add(last);
                self.acc = self.acc << (e & 63) | e >> 32;
                self.due += e as u32;
            }
            self.flush(out);
        }
        let n = run.len() as u32;
        let flags = x.wrapping_sub((x - last) >> 1).wrapping_sub(self.block << (n - 1));
        self.block = last;
        (flags << (LANE_RUN as u32 - n)) as u8
    }

    /// Stores the 8 stream bytes that end with the one holding the next bit
    /// to write (bits after it zero). At most 48 bits (4 codes) separate two
    /// flushes, so each store also completes the previous one's last byte.
    #[inline(always)]
    fn flush(&self, out: &mut [u8]) {
        // `cap` leaves room, so the clamp never acts; it proves the store in
        // bounds without a bounds-check branch at each flush.
        let last = ((self.due / 8) as usize).min(out.len() - 9);
        let word = self.acc << (8 - self.due % 8);
        out[last + 1..last + 9].copy_from_slice(&word.to_be_bytes());
    }
}

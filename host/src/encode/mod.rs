//! The df11 encoder: exponent histogram, length-limited canonical code, and the
//! per-segment lane streams, interleaved exactly as `docs/FORMAT.md` section 7
//! prescribes (warp layout) or stored lane after lane (lanes layout, section 8).

pub mod huffman;
mod scan;

use crate::container::{CompressedTensor, Layout, MAX_ELEMENTS, segments_for};
use df11_gpu::bits;
use df11_gpu::format::{DEFAULT_SEGMENT_ROWS, LANE_RUN, LANES, MAX_CODE_LEN, MAX_SEGMENT_ROWS, ROW_ELEMS, SYMBOLS};
use rayon::prelude::*;

/// Encoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Rows of 256 elements per segment, 1..=65,536. Smaller segments give the
    /// GPU more independent work on small tensors, at about 22 bits per lane of
    /// padding and one offset per segment.
    pub segment_rows: u32,
    /// How the lane streams are stored: [`Layout::Warp`] for the GPU decoder
    /// (the default), [`Layout::Lanes`] for the fastest CPU decoding.
    pub layout: Layout,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { segment_rows: DEFAULT_SEGMENT_ROWS, layout: Layout::Warp }
    }
}

/// Compresses a bf16 tensor with the default options.
///
/// # Panics
/// As [`compress_with`].
pub fn compress(data: &[half::bf16]) -> CompressedTensor {
    compress_bits(bytemuck::cast_slice(data))
}

/// Compresses bf16 bit patterns with the default options.
///
/// # Panics
/// As [`compress_with`].
pub fn compress_bits(bits: &[u16]) -> CompressedTensor {
    compress_with(bits, &EncodeOptions::default())
}

/// Compresses bf16 bit patterns. Deterministic: the same input and options give
/// the same tensor, whatever the thread count.
///
/// # Panics
/// If `opts.segment_rows` is outside 1..=65,536, or if the tensor exceeds the
/// format's limits (2^40 elements, 2^32 - 1 stream words: a tensor of billions
/// of elements with near-random exponents).
pub fn compress_with(bits: &[u16], opts: &EncodeOptions) -> CompressedTensor {
    let rows = opts.segment_rows;
    assert!((1..=MAX_SEGMENT_ROWS).contains(&rows), "segment_rows {rows} is outside 1..={MAX_SEGMENT_ROWS}");
    let n = bits.len() as u64;
    assert!(n < MAX_ELEMENTS, "{n} elements exceed the format's limit of 2^40");

    let scan::Scan { hist, crc: data_crc, sign_mantissa } = scan::scan(bits);
    let code_lengths = huffman::code_lengths(&hist, MAX_CODE_LEN);
    let max_len = code_lengths.iter().copied().max().unwrap_or(0);
    let only_symbol = match (max_len, bits.first()) {
        (0, Some(&b)) => bits::exponent(b),
        _ => 0,
    };

    // Each stream pads its bits to whole words: at most one word more each.
    let code_bits: u64 = hist.iter().zip(&code_lengths).map(|(&n, &l)| n * l as u64).sum();
    let streams = segments_for(n, rows) as usize * opts.layout.streams_per_segment() as usize;
    let max_words = (code_bits / 32) as usize + streams;
    let (stream_offsets, words) = encode_segments(bits, rows, &code_lengths, max_len as u32, opts.layout, max_words);

    CompressedTensor {
        num_elements: n,
        segment_rows: rows,
        max_len,
        only_symbol,
        code_lengths,
        data_crc,
        layout: opts.layout,
        stream_offsets,
        words,
        sign_mantissa,
    }
}

/// Stream offsets and the concatenated words of all segments, coded in parallel.
fn encode_segments(
    bits: &[u16],
    rows: u32,
    code_lengths: &[u8; SYMBOLS],
    max_len: u32,
    layout: Layout,
    max_words: usize,
) -> (Vec<u32>, Vec<u32>) {
    let num_streams = segments_for(bits.len() as u64, rows) as usize * layout.streams_per_segment() as usize;
    if max_len == 0 {
        return (vec![0u32; num_streams + 1], Vec::new());
    }
    let codes = huffman::canonical_codes(code_lengths);
    let seg_elems = ROW_ELEMS * rows as usize;
    // Each run of segments: its words, and the word count of each stream.
    let parts: Vec<(Vec<u32>, Vec<u32>)> = match layout {
        Layout::Warp => {
            let enc = EncodeTable::new(code_lengths, &codes);
            bits.par_chunks(seg_elems)
                .map_init(LaneScratch::new, |scratch, seg| {
                    let w = encode_segment(seg, &enc, max_len, scratch);
                    let len = w.len() as u32;
                    (w, vec![len])
                })
                .collect()
        }
        Layout::Lanes => {
            let enc = LaneTable::new(code_lengths, &codes, bits.len());
            let step = |(mut sc, mut words, mut lens): (LaneScratch, Vec<u32>, Vec<u32>), seg| {
                encode_segment_lanes(seg, &enc, max_len, &mut sc, &mut words, &mut lens);
                (sc, words, lens)
            };
            let strip = |(_, words, lens)| (words, lens);
            if rayon::current_num_threads() == 1 {
                // One vector, sized once: nothing to concatenate.
                let streams = Vec::with_capacity(num_streams);
                let init = (LaneScratch::new(), crate::hint::huge_vec(max_words), streams);
                vec![strip(bits.chunks(seg_elems).fold(init, step))]
            } else {
                // Consecutive segments append to one vector, so that few
                // parts are left to concatenate.
                // Each part starts with room for its thread's share of the
                // words (address space only, until written), in 2 MiB pages.
                let share = max_words / rayon::current_num_threads();
                let init = || (LaneScratch::new(), crate::hint::huge_vec(share), Vec::new());
                bits.par_chunks(seg_elems).fold(init, step).map(strip).collect()
            }
        }
    };
    let total: usize = parts.iter().map(|s| s.0.len()).sum();
    assert!(total <= u32::MAX as usize, "{total} stream words exceed the format's limit of 2^32 - 1");
    let mut offsets = Vec::with_capacity(num_streams + 1);
    offsets.push(0u32);
    let mut at = 0u32;
    for (_, lens) in &parts {
        offsets.extend(lens.iter().map(|&l| {
            at += l;
            at
        }));
    }
    if parts.len() == 1 {
        return (offsets, parts.into_iter().next().map(|p| p.0).unwrap_or_default());
    }
    // The parts are copied in parallel into one zeroed allocation (fresh
    // pages: nothing is written twice).
    let mut words = vec![0u32; total];
    crate::hint::huge_pages(&mut words);
    let mut dests = Vec::with_capacity(parts.len());
    let mut rest = words.as_mut_slice();
    for (w, _) in &parts {
        let (d, r) = rest.split_at_mut(w.len());
        dests.push(d);
        rest = r;
    }
    dests.into_par_iter().zip(&parts).for_each(|(d, (w, _))| d.copy_from_slice(w));
    (offsets, words)
}

/// Encodes one segment in the lanes layout: each lane's codes, in slot order,
/// as one bit string zero-padded to whole words. Appends the segment's words
/// to `words` and each lane's word count to `lens`.
fn encode_segment_lanes(
    seg: &[u16],
    enc: &LaneTable,
    max_len: u32,
    sc: &mut LaneScratch,
    words: &mut Vec<u32>,
    lens: &mut Vec<u32>,
) {
    // One compiled loop for each way of looking codes up, so that neither
    // carries the other's registers.
    let pairs = enc.pair.is_some();
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("bmi2") && std::is_x86_feature_detected!("movbe") {
        // SAFETY: the CPU has BMI2 and MOVBE, the features the function enables.
        return unsafe {
            if pairs {
                encode_segment_lanes_bmi2::<true>(seg, enc, max_len, sc, words, lens)
            } else {
                encode_segment_lanes_bmi2::<false>(seg, enc, max_len, sc, words, lens)
            }
        };
    }
    if pairs {
        encode_segment_lanes_impl::<true>(seg, enc, max_len, sc, words, lens)
    } else {
        encode_segment_lanes_impl::<false>(seg, enc, max_len, sc, words, lens)
    }
}

/// [`encode_segment_lanes`] with BMI2's shifts (see [`encode_segment_bmi2`])
/// and MOVBE's byte-swapping stores of the big-endian stream.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2,movbe")]
fn encode_segment_lanes_bmi2<const PAIRS: bool>(
    seg: &[u16],
    enc: &LaneTable,
    max_len: u32,
    sc: &mut LaneScratch,
    words: &mut Vec<u32>,
    lens: &mut Vec<u32>,
) {
    encode_segment_lanes_impl::<PAIRS>(seg, enc, max_len, sc, words, lens)
}

/// [`encode_segment_lanes`]'s body, compiled for each CPU feature set, with
/// the pair table (`PAIRS`, which `enc` must then hold) or the single one.
///
/// Block by block of rows (the block stays in the L1 cache while every lane
/// reads its part), lane by lane within a block (its writer state stays in
/// registers), each lane into its own byte slot of the scratch; then the
/// slots are copied out.
#[inline(always)]
fn encode_segment_lanes_impl<const PAIRS: bool>(
    seg: &[u16],
    enc: &LaneTable,
    max_len: u32,
    sc: &mut LaneScratch,
    words: &mut Vec<u32>,
    lens: &mut Vec<u32>,
) {
    let rows = seg.len().div_ceil(ROW_ELEMS);
    // A lane's bytes are at most rows·max_len; a block's writes reach at
    // most `WINDOW` bytes past its first. Whole u64s, so that each slot is
    // aligned for words.
    let cap = (rows * max_len as usize + WINDOW).div_ceil(8);
    if sc.lane_slots.len() < cap * LANES {
        sc.lane_slots.resize(cap * LANES, 0);
    }
    let slots = bytemuck::cast_slice_mut::<u64, u8>(&mut sc.lane_slots[..cap * LANES]);
    let mut lanes = [BitWriter::default(); LANES];
    let blocks = seg.chunks(ROW_ELEMS * LANE_BLOCK_ROWS);
    for (block, next) in blocks.clone().zip(blocks.skip(1).map(Some).chain([None])) {
        // The lanes read a block in strides of a row: without this, lines
        // would come from memory one at a time as the first lane reads them.
        if let Some(next) = next {
            crate::hint::prefetch(bytemuck::cast_slice(next));
        }
        // Only a tensor's last row can be partial (`tail`).
        let (full, tail) = block.as_chunks::<ROW_ELEMS>();
        // With the pair table, the block's exponent bytes first, in one
        // vectorised pass, so that the lanes load pair indices directly.
        let table = enc.pair.as_deref().filter(|_| PAIRS).unwrap_or(&EMPTY_PAIRS);
        if PAIRS {
            let exps = &mut bytemuck::cast_slice_mut::<u16, u8>(&mut sc.exps[..])[..full.len() * ROW_ELEMS];
            for (e, &b) in exps.iter_mut().zip(full.as_flattened()) {
                *e = bits::exponent(b);
            }
        }
        let pairs = &sc.exps[..if PAIRS { full.len() * ROW_ELEMS / 2 } else { 0 }];
        for (j, (w, out)) in lanes.iter_mut().zip(slots.chunks_exact_mut(8 * cap)).enumerate() {
            let mut st = *w;
            // A fixed-size window, so that the stores need no bounds checks.
            let base = st.byte;
            st.byte = 0;
            let out: &mut [u8; WINDOW] = (&mut out[base..base + WINDOW]).try_into().unwrap();
            if PAIRS {
                let rows = pairs.as_chunks::<{ ROW_ELEMS / 2 }>().0.iter().map(|row| {
                    // Two exponents a lookup: their bytes, one u16 load,
                    // index the pair table (loads, where one u64 split by
                    // shifts took seven more instructions a row).
                    let p = row.as_chunks::<{ LANE_RUN / 2 }>().0[j];
                    let pair = |k: usize| table[u16::from_le(p[k]) as usize];
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
    for (st, out) in lanes.iter().zip(sc.lane_slots.chunks_exact_mut(cap)) {
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
struct LaneTable {
    /// Per 9-bit index `bits >> 7` (sign and exponent, so that no mask is
    /// needed): one code.
    single: [u64; 2 * SYMBOLS],
    /// For tensors large enough to pay for it: per two exponent bytes read
    /// as a little-endian u16 (first element's in the low byte), both codes,
    /// first element's first. Only pairs of exponents the tensor holds are
    /// filled; the rest stay zero, untouched pages of a zeroed allocation.
    pair: Option<Box<[u64; 1 << 16]>>,
}

/// A stand-in for the pair table where the single one is used: never read.
static EMPTY_PAIRS: [u64; 1 << 16] = [0; 1 << 16];

/// The pair table's setup (filling an entry for each pair of exponents the
/// tensor holds, and the pages they are on) is paid back from about 8
/// elements per entry, and 64 Ki elements in all (measured: 4,096 elements
/// took 30 µs with it, 16 without).
const PAIR_TABLE_MIN_ELEMENTS: usize = 1 << 16;

impl LaneTable {
    fn new(lengths: &[u8; SYMBOLS], codes: &[u32; SYMBOLS], elements: usize) -> Self {
        let single: [u64; SYMBOLS] = std::array::from_fn(|i| {
            let (len, code) = (lengths[i] as u32, codes[i] as u64);
            if len == 0 { 0 } else { code << (64 - len) | len as u64 }
        });
        let used: Vec<usize> = (0..SYMBOLS).filter(|&s| lengths[s] > 0).collect();
        let pair = (elements >= PAIR_TABLE_MIN_ELEMENTS.max(8 * used.len() * used.len())).then(|| {
            let mut pair: Box<[u64; 1 << 16]> = vec![0; 1 << 16].into_boxed_slice().try_into().expect("2^16 entries");
            for &second in &used {
                for &first in &used {
                    pair[first | second << 8] = concat(single[first], single[second]);
                }
            }
            pair
        });
        LaneTable { single: std::array::from_fn(|i| single[i % SYMBOLS]), pair }
    }

    /// The entry of the element with bit pattern `b`.
    #[inline(always)]
    fn get(&self, b: u16) -> u64 {
        self.single[(b >> 7) as usize]
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

/// Per 9-bit index `bits >> 7` (sign and exponent, so no mask is needed):
/// `code << 32 | len`, so that both a shift by the length (which takes the
/// count's low 6 bits) and a 32-bit addition of it need no mask.
struct EncodeTable([u64; 2 * SYMBOLS]);

impl EncodeTable {
    fn new(lengths: &[u8; SYMBOLS], codes: &[u32; SYMBOLS]) -> Self {
        EncodeTable(std::array::from_fn(|i| (codes[i % SYMBOLS] as u64) << 32 | lengths[i % SYMBOLS] as u64))
    }

    #[inline(always)]
    fn get(&self, b: u16) -> u64 {
        self.0[(b >> 7) as usize]
    }
}

/// Bytes before each lane's stream in its slot of `LaneScratch::lane_bytes`:
/// a flush stores the 8 bytes that end with the current one, which reach up
/// to 7 bytes before the stream's start.
const HEAD: usize = 8;

/// Rows coded lane by lane at a time: 16 KiB of input.
const BLOCK_ROWS: usize = 32;

/// Buffers reused across the segments one worker encodes.
struct LaneScratch {
    /// Lane `j`'s bit string, as big-endian bytes, from bit `max_len - 1` of
    /// `lane_bytes[j * cap + HEAD..(j + 1) * cap]` while a segment is encoded
    /// (so that the flushes can use `due` as the bit position, see `LaneState`).
    lane_bytes: Vec<u8>,
    /// The lanes layout's per-lane byte slots (u64s, so that they can be read
    /// as words).
    lane_slots: Vec<u64>,
    /// Lane of each refill, in the order the decoder performs them, plus
    /// slack for the 8-byte stores of `push_refills`.
    refills: Vec<u8>,
    /// The exponent bytes of a block of the lanes layout's rows.
    /// As little-endian u16s: the pair table's indices.
    exps: Box<[u16; ROW_ELEMS * LANE_BLOCK_ROWS / 2]>,
}

impl LaneScratch {
    fn new() -> Self {
        let exps = Box::new([0; ROW_ELEMS * LANE_BLOCK_ROWS / 2]);
        LaneScratch { lane_bytes: Vec::new(), lane_slots: Vec::new(), refills: Vec::new(), exps }
    }
}

/// Encodes one segment (up to `256·R` elements) into its interleaved words.
///
/// Lane by lane through blocks of rows, branch-free: the refill decisions and
/// the word boundaries are data dependent and would be mispredicted often.
/// Each lane run yields a byte of refill flags (bit 7 - k: refill at step k);
/// after the block they are put in the decoder's (row, k, lane) order.
fn encode_segment(seg: &[u16], enc: &EncodeTable, max_len: u32, sc: &mut LaneScratch) -> Vec<u32> {
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
fn encode_segment_bmi2(seg: &[u16], enc: &EncodeTable, max_len: u32, sc: &mut LaneScratch) -> Vec<u32> {
    encode_segment_impl(seg, enc, max_len, sc)
}

/// [`encode_segment`]'s body, compiled for each CPU feature set.
#[inline(always)]
fn encode_segment_impl(seg: &[u16], enc: &EncodeTable, max_len: u32, sc: &mut LaneScratch) -> Vec<u32> {
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
    fn encode_run(&mut self, run: &[u16], enc: &EncodeTable, out: &mut [u8]) -> u8 {
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

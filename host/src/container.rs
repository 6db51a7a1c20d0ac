//! The in-memory form of a compressed tensor and of a group of tensors, and
//! their byte serialization (`docs/FORMAT.md`).

use crate::error::{Error, Result};
use df11_gpu::bits;
use df11_gpu::format::{
    CONTAINER_HEADER_BYTES, FIRST_VERSION, LANE_RUN, LANES, LANES_VERSION, LANES9_VERSION, LAYOUT_LANES, LAYOUT_LANES9,
    LAYOUT_WARP, MAGIC, MAX_CODE_LEN, MAX_SEGMENT_ROWS, RECORD_LAYOUT_BYTE, ROW_ELEMS, SYMBOLS, SYMBOLS9,
    TENSOR_HEADER_BYTES, TENSOR_HEADER_BYTES9, VERSION, WORD_BITS,
};
use std::borrow::Cow;

/// Exclusive upper bound on elements per tensor (FORMAT.md section 9).
pub const MAX_ELEMENTS: u64 = 1 << 40;

/// The most elements a container of `len` bytes can hold, in any layout:
/// each element takes at least 7 raw bits (lanes9's sign and low mantissa
/// bits), and its code may take none (a tensor of one symbol has the
/// zero-length code). A reader bounds a claimed element count with it
/// before it allocates for that count.
pub fn max_elements_in(len: u64) -> u64 {
    // raw9_len(n) = ceil(7n / 8) <= len  <=>  n <= floor(8 len / 7).
    (len as u128 * 8 / 7) as u64
}

/// How a record stores its lane streams (`docs/FORMAT.md` sections 7 and 8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// The lanes of a segment interleaved in a warp's refill order, one
    /// offset per segment: the first layout, kept for the files written in
    /// it. Version 1 and 2.
    Warp,
    /// Every lane's stream whole, one offset per lane. A CPU decodes
    /// several lanes at once (about 5x the warp layout per core), the GPU
    /// one lane per thread. Version 2 only. The fastest to decode on a CPU:
    /// about 1.2-1.35x lanes9.
    Lanes,
    /// The lanes layout's streams coding 9-bit symbols (exponent and the
    /// mantissa's top bit), the other 7 bits raw, 8 elements in 7 bytes: the
    /// default. 0.04-0.05 bits/weight smaller than lanes on real weights, and
    /// within 0.025 of the per-tensor 8 + H bound on whole files; a CPU core
    /// decodes it at about 0.8x the lanes layout's speed (above 3 GB/s).
    /// Version 3 only.
    #[default]
    Lanes9,
}

impl Layout {
    /// The record's `layout` byte.
    pub fn code(self) -> u8 {
        match self {
            Layout::Warp => LAYOUT_WARP,
            Layout::Lanes => LAYOUT_LANES,
            Layout::Lanes9 => LAYOUT_LANES9,
        }
    }

    /// The layout of a `layout` byte, if it names one.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            LAYOUT_WARP => Some(Layout::Warp),
            LAYOUT_LANES => Some(Layout::Lanes),
            LAYOUT_LANES9 => Some(Layout::Lanes9),
            _ => None,
        }
    }

    /// Independent streams per segment, each with an offset: 1 or 32.
    pub fn streams_per_segment(self) -> u64 {
        match self {
            Layout::Warp => 1,
            Layout::Lanes | Layout::Lanes9 => LANES as u64,
        }
    }

    /// Whether each lane's stream is stored whole with its own offset (the
    /// lanes and lanes9 layouts).
    pub fn whole_lanes(self) -> bool {
        self != Layout::Warp
    }

    /// Symbols of the code: 256 exponents, or 512 for lanes9.
    pub fn symbols(self) -> usize {
        if self == Layout::Lanes9 { SYMBOLS9 } else { SYMBOLS }
    }

    /// Bytes of a record's fixed part, before its offsets.
    pub fn header_bytes(self) -> usize {
        if self == Layout::Lanes9 { TENSOR_HEADER_BYTES9 } else { TENSOR_HEADER_BYTES }
    }

    /// Bytes of the raw per-element data of `n` elements: one
    /// sign+mantissa byte each, or lanes9's 7 bits each.
    pub fn raw_len(self, n: u64) -> u64 {
        if self == Layout::Lanes9 { bits::raw9_len(n) } else { n }
    }

    /// The oldest container version that may hold this layout.
    pub fn min_version(self) -> u16 {
        match self {
            Layout::Warp => FIRST_VERSION,
            Layout::Lanes => LANES_VERSION,
            Layout::Lanes9 => LANES9_VERSION,
        }
    }

    /// Lower-case name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Warp => "warp",
            Layout::Lanes => "lanes",
            Layout::Lanes9 => "lanes9",
        }
    }
}

/// A record of the df11 container format, generic over how it holds its
/// per-element data: [`CompressedTensor`] owns it, [`TensorView`] borrows it.
///
/// Fields are public so decoders and the GPU uploader can read them directly;
/// [`CompressedTensor::validate`] checks every invariant `docs/FORMAT.md` states,
/// and every decoder calls it (or relies on a caller that did) before touching data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<W, B> {
    /// Number of bf16 elements (N).
    pub num_elements: u64,
    /// Rows of 256 elements per segment (R).
    pub segment_rows: u32,
    /// Longest code length; 0 means every exponent is `only_symbol`.
    pub max_len: u8,
    /// The single symbol when `max_len == 0` and N > 0; 0 otherwise. An
    /// exponent (below 256), or a 9-bit symbol in the lanes9 layout.
    pub only_symbol: u16,
    /// Code length of each symbol, 0 = absent: the 256 exponents, or the 512
    /// 9-bit symbols of the lanes9 layout (entries from 256 on are zero in
    /// the other layouts).
    pub code_lengths: [u8; SYMBOLS9],
    /// CRC32C of the original tensor as little-endian `u16`s.
    pub data_crc: u32,
    /// How the lane streams are stored.
    pub layout: Layout,
    /// Start word of each independent stream, then the total word count W:
    /// per segment (S + 1 entries) in the warp layout, per lane of each
    /// segment, segment-major (32·S + 1 entries), in the lanes layout.
    pub stream_offsets: W,
    /// The code streams. Warp layout: interleaved 32-bit words, MSB-first.
    /// Lanes layout: each lane's bit string as bytes in stream order, read
    /// from these words as little-endian bytes.
    pub words: W,
    /// The raw bits of each element: a sign+mantissa byte each, element by
    /// element; in the lanes9 layout, 7 bits each, packed as in
    /// `docs/FORMAT.md` section 12 ([`Layout::raw_len`] bytes).
    pub sign_mantissa: B,
}

impl<W, B> Record<W, B> {
    /// The 256 exponent code lengths of a layout other than lanes9.
    pub fn lengths8(&self) -> &[u8; SYMBOLS] {
        self.code_lengths[..SYMBOLS].try_into().expect("256 lengths")
    }

    /// This record's header fields with other data.
    fn with_data<W2, B2>(&self, stream_offsets: W2, words: W2, sign_mantissa: B2) -> Record<W2, B2> {
        Record {
            num_elements: self.num_elements,
            segment_rows: self.segment_rows,
            max_len: self.max_len,
            only_symbol: self.only_symbol,
            code_lengths: self.code_lengths,
            data_crc: self.data_crc,
            layout: self.layout,
            stream_offsets,
            words,
            sign_mantissa,
        }
    }
}

/// One compressed bf16 tensor, owning its data.
pub type CompressedTensor = Record<Vec<u32>, Vec<u8>>;

/// A record with its per-element data borrowed: what the CPU decoders read.
/// [`TensorView::from_bytes`] parses one straight from a container's bytes
/// (a memory-mapped checkpoint, say) without copying the sign+mantissa
/// bytes, nor the offsets and words where they are 4-byte aligned on a
/// little-endian host; [`CompressedTensor::view`] views an owned tensor.
pub type TensorView<'a> = Record<Cow<'a, [u32]>, &'a [u8]>;

impl<'a> TensorView<'a> {
    /// Number of segments (S).
    pub fn num_segments(&self) -> u64 {
        self.stream_offsets.len().saturating_sub(1) as u64 / self.layout.streams_per_segment()
    }

    /// Elements in one full segment: `256·R`.
    pub fn segment_elems(&self) -> u64 {
        ROW_ELEMS as u64 * self.segment_rows as u64
    }

    /// Parses a container that holds exactly one tensor, as strictly as
    /// [`CompressedTensor::from_bytes`], borrowing its data from `bytes`.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        let (version, count) = read_container_header(bytes)?;
        if count != 1 {
            return Err(Error::invalid("tensor_count", format!("{count} tensors where exactly 1 is expected")));
        }
        let mut pos = CONTAINER_HEADER_BYTES;
        let t = read_record(bytes, version, &mut pos)?;
        check_end(bytes, pos)?;
        Ok(t)
    }

    /// An owned copy.
    pub fn to_owned(&self) -> CompressedTensor {
        self.with_data(self.stream_offsets.to_vec(), self.words.to_vec(), self.sign_mantissa.to_vec())
    }

    /// Checks every invariant of `docs/FORMAT.md` sections 4 and 5.
    pub fn validate(&self) -> Result<()> {
        let n = self.num_elements;
        if n >= MAX_ELEMENTS {
            return Err(Error::invalid("num_elements", format!("{n} is not below 2^40")));
        }
        if !(1..=MAX_SEGMENT_ROWS).contains(&self.segment_rows) {
            return Err(Error::invalid(
                "segment_rows",
                format!("{} is outside 1..={MAX_SEGMENT_ROWS}", self.segment_rows),
            ));
        }
        let raw = self.layout.raw_len(n);
        if self.sign_mantissa.len() as u64 != raw {
            return Err(Error::invalid(
                "sign_mantissa",
                format!("{} bytes for {n} elements, expected {raw}", self.sign_mantissa.len()),
            ));
        }
        let symbols = self.layout.symbols();
        if let Some(s) = self.code_lengths[symbols..].iter().position(|&l| l != 0) {
            return Err(Error::invalid(
                "code_lengths",
                format!("symbol {} is not in the {symbols} of the layout", s + symbols),
            ));
        }
        if self.only_symbol as usize >= symbols {
            return Err(Error::invalid(
                "only_symbol",
                format!("{} is not one of the {symbols} symbols", self.only_symbol),
            ));
        }
        let s = segments_for(n, self.segment_rows);
        let streams = self.layout.streams_per_segment() * s;
        if self.stream_offsets.len() as u64 != streams + 1 {
            return Err(Error::invalid(
                "stream_offsets",
                format!("{} entries, expected {} for {s} segments", self.stream_offsets.len(), streams + 1),
            ));
        }
        if self.words.len() as u64 > u32::MAX as u64 {
            return Err(Error::invalid("num_words", format!("{} is not below 2^32", self.words.len())));
        }
        if self.stream_offsets[0] != 0 {
            return Err(Error::invalid("stream_offsets", "first offset is not 0"));
        }
        if let Some(i) = self.stream_offsets.windows(2).position(|w| w[0] > w[1]) {
            return Err(Error::invalid("stream_offsets", format!("offset {} decreases", i + 1)));
        }
        let last = self.stream_offsets[streams as usize];
        if last as u64 != self.words.len() as u64 {
            return Err(Error::invalid(
                "stream_offsets",
                format!("last offset {last} is not the word count {}", self.words.len()),
            ));
        }
        let longest = self.code_lengths.iter().copied().max().unwrap_or(0);
        if longest as u32 > MAX_CODE_LEN {
            return Err(Error::invalid("code_lengths", format!("length {longest} exceeds {MAX_CODE_LEN}")));
        }
        if self.max_len != longest {
            return Err(Error::invalid(
                "max_len",
                format!("{} but the longest code length is {longest}", self.max_len),
            ));
        }
        if self.max_len == 0 {
            if !self.words.is_empty() {
                return Err(Error::invalid("num_words", "must be 0 when max_len is 0"));
            }
            if n == 0 && self.only_symbol != 0 {
                return Err(Error::invalid("only_symbol", "must be 0 for an empty tensor"));
            }
        } else {
            // FORMAT.md §5: an empty tensor has no code. Without this, an
            // empty tensor had more than one accepted serialization.
            if n == 0 {
                return Err(Error::invalid("max_len", "must be 0 for an empty tensor"));
            }
            if self.only_symbol != 0 {
                return Err(Error::invalid("only_symbol", "must be 0 when max_len is not 0"));
            }
            // Kraft sum in units of 2^-MAX_CODE_LEN; a complete code sums to exactly one.
            let kraft: u32 =
                self.code_lengths.iter().filter(|&&l| l != 0).map(|&l| 1u32 << (MAX_CODE_LEN - l as u32)).sum();
            if kraft != 1 << MAX_CODE_LEN {
                return Err(Error::invalid(
                    "code_lengths",
                    format!("Kraft sum is {kraft}/{} instead of exactly 1", 1u32 << MAX_CODE_LEN),
                ));
            }
        }
        if self.layout.whole_lanes() {
            self.validate_lane_sizes()?;
        }
        if self.layout == Layout::Lanes9 {
            self.validate_raw_tail()?;
        }
        Ok(())
    }

    /// Lanes9: a partial last group's bytes have bit 7 clear (no eighth
    /// element), so that each tensor has one serialization.
    fn validate_raw_tail(&self) -> Result<()> {
        let whole = (self.num_elements / LANE_RUN as u64 * df11_gpu::format::RAW9_GROUP_BYTES as u64) as usize;
        if self.sign_mantissa[whole..].iter().any(|&b| b & 0x80 != 0) {
            return Err(Error::invalid("sign_mantissa", "a byte of the partial last group has bit 7 set"));
        }
        Ok(())
    }

    /// Lanes layout: no lane stream is longer than its slots' codes can be
    /// (`ceil(slots · max_len / 32)` words), so an empty lane has no words.
    /// The decoders check the exact length; this bound is what the stream
    /// reads of a lane may rely on before decoding.
    fn validate_lane_sizes(&self) -> Result<()> {
        let seg_elems = self.segment_elems();
        for (i, w) in self.stream_offsets.windows(2).enumerate() {
            let (s, lane) = (i as u64 / LANES as u64, i % LANES);
            let seg_len = (self.num_elements - s * seg_elems).min(seg_elems) as usize;
            let most = (lane_slots(seg_len, lane) as u64 * self.max_len as u64).div_ceil(WORD_BITS as u64);
            if (w[1] - w[0]) as u64 > most {
                return Err(Error::invalid(
                    "stream_offsets",
                    format!("segment {s} lane {lane} has {} words, at most {most} can hold its codes", w[1] - w[0]),
                ));
            }
        }
        Ok(())
    }
}

/// A single-tensor container parsed in place with its record CRC not
/// checked yet: the decoders checksum each segment's words and bytes as they
/// decode it, while those are in cache, instead of reading the whole record
/// once more beforehand (`decode::decode_container_into`). The record CRC is
/// `crc(head ‖ words ‖ sign+mantissa ‖ padding)`.
pub(crate) struct Unchecked<'a> {
    pub view: TensorView<'a>,
    /// The record's bytes before its words: header and offsets.
    head: &'a [u8],
    pad: usize,
    stored: u32,
}

impl<'a> Unchecked<'a> {
    /// Parses `bytes` as [`TensorView::from_bytes`] does but for the record CRC.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let (version, count) = read_container_header(bytes)?;
        if count != 1 {
            return Err(Error::invalid("tensor_count", format!("{count} tensors where exactly 1 is expected")));
        }
        let mut pos = CONTAINER_HEADER_BYTES;
        let view = read_record_as(bytes, version, &mut pos, false)?;
        check_end(bytes, pos)?;
        let record = &bytes[CONTAINER_HEADER_BYTES..];
        let head = view.layout.header_bytes() + 4 * view.stream_offsets.len();
        let pad = pad_for(view.sign_mantissa.len() as u64) as usize;
        Ok(Unchecked { stored: u32_at(record, record.len() - 4), head: &record[..head], pad, view })
    }

    /// Checks the record CRC from those of all the words and all the
    /// sign+mantissa bytes.
    pub fn check(&self, words_crc: u32, sm_crc: u32) -> Result<()> {
        let head = crc32c::crc32c(self.head);
        let words = crate::crc::combine(head, words_crc, 4 * self.view.words.len() as u64);
        let sm = crate::crc::combine(words, sm_crc, self.view.sign_mantissa.len() as u64);
        let computed = crc32c::crc32c_append(sm, &[0; 3][..self.pad]);
        if computed != self.stored {
            return Err(Error::Checksum { what: "record", stored: self.stored, computed });
        }
        Ok(())
    }
}

/// Several tensors decoded together, e.g. all weights of a transformer block:
/// one container, one kernel launch, one output buffer (tensors back to back).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// The tensors, in output order.
    pub tensors: Vec<CompressedTensor>,
}

/// Segments of a tensor with `num_elements` elements and `segment_rows` rows
/// per segment: `ceil(N / (256·R))`. `segment_rows` must be at least 1.
pub fn segments_for(num_elements: u64, segment_rows: u32) -> u64 {
    num_elements.div_ceil(ROW_ELEMS as u64 * segment_rows as u64)
}

/// Zero bytes after `raw_len` raw bytes that align the record to 4 bytes.
fn pad_for(raw_len: u64) -> u64 {
    (4 - raw_len % 4) % 4
}

/// Serialized record length from its header fields, in `u64` and saturating,
/// so that no header value, however large, can overflow it (a saturated
/// length is longer than any input, so it is rejected as such).
fn record_len(num_elements: u64, num_segments: u64, num_words: u64, layout: Layout) -> u64 {
    let offsets = layout.streams_per_segment().saturating_mul(num_segments).saturating_add(1);
    let raw = layout.raw_len(num_elements);
    [4u64.saturating_mul(offsets), 4u64.saturating_mul(num_words), raw, pad_for(raw), 4]
        .into_iter()
        .fold(layout.header_bytes() as u64, u64::saturating_add)
}

/// Valid slots (elements) of lane `lane` in a segment of `seg_len` elements:
/// the lane owns 8 consecutive elements of each 256-element row.
pub fn lane_slots(seg_len: usize, lane: usize) -> usize {
    let full_rows = seg_len / ROW_ELEMS;
    let tail = seg_len % ROW_ELEMS;
    full_rows * LANE_RUN + tail.saturating_sub(lane * LANE_RUN).min(LANE_RUN)
}

impl CompressedTensor {
    /// Number of segments (S).
    pub fn num_segments(&self) -> u64 {
        self.view().num_segments()
    }

    /// Elements in one full segment: `256·R`.
    pub fn segment_elems(&self) -> u64 {
        self.view().segment_elems()
    }

    /// Segments `first .. first + count` as a tensor of their own: segments
    /// decode independently, so this is a valid record (same code, rebased
    /// offsets, the segments' words and bytes) holding elements
    /// `first·256R ..` of this one. Its data CRC is computed by decoding
    /// them, which also checks their streams. A consumer can so split a large
    /// matrix into pieces of whole segments that decode on their own, on
    /// the GPU too, without re-encoding.
    pub fn segments(&self, first: u64, count: u64) -> Result<CompressedTensor> {
        self.validate()?;
        let s = self.num_segments();
        let end = first.checked_add(count).filter(|&e| e <= s && count > 0);
        let Some(end) = end else {
            return Err(Error::invalid("segments", format!("{first} + {count} is not a range of the {s} segments")));
        };
        let per = self.layout.streams_per_segment() as usize;
        let offsets = &self.stream_offsets[first as usize * per..=end as usize * per];
        let base = offsets[0];
        let e0 = first * self.segment_elems();
        let e1 = (end * self.segment_elems()).min(self.num_elements);
        // Segments start on whole rows, so their raw bytes are a contiguous range.
        let raw = self.layout.raw_len(e0) as usize..self.layout.raw_len(e1) as usize;
        let mut t = CompressedTensor {
            num_elements: e1 - e0,
            stream_offsets: offsets.iter().map(|o| o - base).collect(),
            words: self.words[base as usize..offsets[offsets.len() - 1] as usize].to_vec(),
            sign_mantissa: self.sign_mantissa[raw].to_vec(),
            ..self.clone_header()
        };
        let bits = crate::decode::decode(&t, &crate::DecodeOptions { verify_crc: false, parallel: true })?;
        t.data_crc = data_crc(&bits);
        Ok(t)
    }

    /// Everything but the per-element data (empty vectors).
    fn clone_header(&self) -> CompressedTensor {
        self.with_data(Vec::new(), Vec::new(), Vec::new())
    }

    /// Bytes [`CompressedTensor::to_bytes`] produces, container header included
    /// (saturating at `u64::MAX` for fields no valid tensor has).
    pub fn serialized_len(&self) -> u64 {
        (CONTAINER_HEADER_BYTES as u64).saturating_add(self.record_len())
    }

    /// Bytes of this tensor's record alone.
    pub fn record_len(&self) -> u64 {
        record_len(self.num_elements, self.num_segments(), self.words.len() as u64, self.layout)
    }

    /// Checks every invariant of `docs/FORMAT.md` sections 4 and 5.
    pub fn validate(&self) -> Result<()> {
        self.view().validate()
    }

    /// This tensor's fields, its data borrowed.
    pub fn view(&self) -> TensorView<'_> {
        self.with_data(Cow::Borrowed(&self.stream_offsets), Cow::Borrowed(&self.words), &self.sign_mantissa)
    }

    /// Serializes as a container holding this one tensor.
    ///
    /// The tensor should be valid ([`CompressedTensor::validate`]); the encoder
    /// only produces valid tensors.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.to_bytes_into(&mut out);
        out
    }

    /// [`CompressedTensor::to_bytes`] into `out`, replacing what it held
    /// (its capacity is reused).
    pub fn to_bytes_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.serialized_len() as usize);
        write_container_header(1, version_for([self]), out);
        self.write_record(out);
    }

    /// Parses a container that holds exactly one tensor, strictly: checksums,
    /// every invariant, and no trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        TensorView::from_bytes(bytes).map(|v| v.to_owned())
    }

    fn write_record(&self, out: &mut Vec<u8>) {
        let r: std::result::Result<(), std::convert::Infallible> = self.record_pieces(&mut |p: &[u8]| {
            out.extend_from_slice(p);
            Ok(())
        });
        r.unwrap_or_else(|e| match e {})
    }

    /// The bytes of [`CompressedTensor::to_bytes`], handed to `sink` in
    /// order in a few pieces (headers, offsets, words, sign+mantissa bytes,
    /// padding and CRC) instead of assembled: a container can so be written
    /// to a file without a copy of it in memory.
    pub fn write_pieces<E>(
        &self,
        mut sink: impl FnMut(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut head = Vec::with_capacity(CONTAINER_HEADER_BYTES);
        write_container_header(1, version_for([self]), &mut head);
        sink(&head)?;
        self.record_pieces(&mut sink)
    }

    /// The record's bytes, in pieces, to `sink`.
    fn record_pieces<E>(
        &self,
        sink: &mut impl FnMut(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let s = self.num_segments() as u32;
        let mut head = Vec::with_capacity(self.layout.header_bytes());
        head.extend_from_slice(&self.num_elements.to_le_bytes());
        head.extend_from_slice(&self.segment_rows.to_le_bytes());
        head.extend_from_slice(&s.to_le_bytes());
        head.extend_from_slice(&(self.words.len() as u32).to_le_bytes());
        head.push(self.max_len);
        let [only_low, only_high] = self.only_symbol.to_le_bytes();
        head.push(only_low);
        head.extend_from_slice(&[self.layout.code(), only_high]);
        head.extend_from_slice(&self.data_crc.to_le_bytes());
        head.extend_from_slice(&[0; 4]);
        let lengths = &self.code_lengths[..self.layout.symbols()];
        head.extend(lengths.chunks_exact(2).map(|p| (p[0] & 0xf) | (p[1] << 4)));
        let mut crc = crc32c::crc32c(&head);
        sink(&head)?;
        for v in [&self.stream_offsets, &self.words] {
            let bytes = u32_bytes(v);
            crc = crc32c::crc32c_append(crc, &bytes);
            sink(&bytes)?;
        }
        crc = crc32c::crc32c_append(crc, &self.sign_mantissa);
        sink(&self.sign_mantissa)?;
        let pad = &[0u8; 3][..pad_for(self.sign_mantissa.len() as u64) as usize];
        crc = crc32c::crc32c_append(crc, pad);
        let mut tail = pad.to_vec();
        tail.extend_from_slice(&crc.to_le_bytes());
        sink(&tail)
    }
}

/// Reads one record of a container of `version` at `*pos`, advancing it
/// past the record.
fn read_record<'a>(bytes: &'a [u8], version: u16, pos: &mut usize) -> Result<TensorView<'a>> {
    read_record_as(bytes, version, pos, true)
}

/// [`read_record`], checking the record CRC only if `check_crc`.
fn read_record_as<'a>(bytes: &'a [u8], version: u16, pos: &mut usize, check_crc: bool) -> Result<TensorView<'a>> {
    let rest = &bytes[*pos..];
    need(rest, TENSOR_HEADER_BYTES as u64)?;
    let n = u64_at(rest, 0);
    let segment_rows = u32_at(rest, 8);
    let s = u32_at(rest, 12) as u64;
    let w = u32_at(rest, 16) as u64;
    // These three fields size the record; check them before trusting its length.
    if n >= MAX_ELEMENTS {
        return Err(Error::invalid("num_elements", format!("{n} is not below 2^40")));
    }
    if !(1..=MAX_SEGMENT_ROWS).contains(&segment_rows) {
        return Err(Error::invalid("segment_rows", format!("{segment_rows} is outside 1..={MAX_SEGMENT_ROWS}")));
    }
    let expected_s = segments_for(n, segment_rows);
    if s != expected_s {
        return Err(Error::invalid("num_segments", format!("{s}, expected {expected_s} for {n} elements")));
    }
    // Version 1 had no layout byte: it was reserved, so zero (warp).
    let layout = match Layout::from_code(rest[RECORD_LAYOUT_BYTE]) {
        Some(l) if version < l.min_version() => {
            return Err(if version < LANES_VERSION {
                Error::invalid("reserved", "reserved header bytes are not zero")
            } else {
                Error::invalid("layout", format!("layout {} needs container version {}", l.name(), l.min_version()))
            });
        }
        Some(l) => l,
        None => {
            return Err(Error::invalid("layout", format!("unknown layout {}", rest[RECORD_LAYOUT_BYTE])));
        }
    };
    let len = record_len(n, s, w, layout);
    need(rest, len)?;
    // `len` fits in the input, hence in usize, and nothing was allocated yet.
    let len = len as usize;
    let body = &rest[..len - 4];
    if check_crc {
        let stored = u32_at(rest, len - 4);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(Error::Checksum { what: "record", stored, computed });
        }
    }
    // Byte 23 is reserved but in lanes9, where it holds `only_symbol`'s bit 8.
    let only_high = rest[RECORD_LAYOUT_BYTE + 1];
    if (layout != Layout::Lanes9 && only_high != 0) || rest[28..32] != [0; 4] {
        return Err(Error::invalid("reserved", "reserved header bytes are not zero"));
    }
    let mut code_lengths = [0u8; SYMBOLS9];
    for (i, &b) in rest[32..32 + layout.symbols() / 2].iter().enumerate() {
        code_lengths[2 * i] = b & 0xf;
        code_lengths[2 * i + 1] = b >> 4;
    }
    let mut at = layout.header_bytes();
    let offsets_len = 4 * (layout.streams_per_segment() as usize * s as usize + 1);
    let stream_offsets = u32s(&rest[at..at + offsets_len]);
    at += offsets_len;
    let words = u32s(&rest[at..at + 4 * w as usize]);
    at += 4 * w as usize;
    let raw = layout.raw_len(n) as usize;
    let sign_mantissa = &rest[at..at + raw];
    at += raw;
    if body[at..].iter().any(|&b| b != 0) {
        return Err(Error::invalid("padding", "padding bytes are not zero"));
    }
    let t = TensorView {
        num_elements: n,
        segment_rows,
        max_len: rest[20],
        only_symbol: u16::from_le_bytes([rest[21], only_high]),
        code_lengths,
        data_crc: u32_at(rest, 24),
        layout,
        stream_offsets,
        words,
        sign_mantissa,
    };
    t.validate()?;
    *pos += len;
    Ok(t)
}

impl Group {
    /// Total elements of all tensors: the length of the group's output buffer.
    pub fn num_elements(&self) -> u64 {
        self.tensors.iter().map(|t| t.num_elements).sum()
    }

    /// Bytes [`Group::to_bytes`] produces (saturating at `u64::MAX` for fields
    /// no valid tensor has).
    pub fn serialized_len(&self) -> u64 {
        self.tensors.iter().map(|t| t.record_len()).fold(CONTAINER_HEADER_BYTES as u64, u64::saturating_add)
    }

    /// Validates every tensor.
    pub fn validate(&self) -> Result<()> {
        if self.tensors.len() as u64 > u32::MAX as u64 {
            return Err(Error::invalid("tensor_count", "not below 2^32"));
        }
        self.tensors.iter().try_for_each(CompressedTensor::validate)
    }

    /// Serializes as one container with one record per tensor, in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.serialized_len() as usize);
        write_container_header(self.tensors.len() as u32, version_for(&self.tensors), &mut out);
        for t in &self.tensors {
            t.write_record(&mut out);
        }
        out
    }

    /// Parses a container with any number of tensors, strictly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (version, count) = read_container_header(bytes)?;
        let mut pos = CONTAINER_HEADER_BYTES;
        // No capacity from `count`: it is untrusted until the records are read.
        let mut tensors = Vec::new();
        for _ in 0..count {
            tensors.push(read_record(bytes, version, &mut pos)?.to_owned());
        }
        check_end(bytes, pos)?;
        Ok(Group { tensors })
    }
}

/// The lowest version that holds these records, so that older readers
/// still read what they can: 1 for warp-layout records only, 2 with lanes.
fn version_for<'a>(tensors: impl IntoIterator<Item = &'a CompressedTensor>) -> u16 {
    tensors.into_iter().map(|t| t.layout.min_version()).max().unwrap_or(FIRST_VERSION).min(VERSION)
}

fn write_container_header(count: u32, version: u16, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Checks the container header and returns its version and `tensor_count`.
fn read_container_header(bytes: &[u8]) -> Result<(u16, u32)> {
    need(bytes, CONTAINER_HEADER_BYTES as u64)?;
    if bytes[0..4] != MAGIC {
        return Err(Error::BadMagic);
    }
    let stored = u32_at(bytes, 12);
    let computed = crc32c::crc32c(&bytes[..12]);
    if stored != computed {
        return Err(Error::Checksum { what: "header", stored, computed });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if !(FIRST_VERSION..=VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion(version));
    }
    let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
    if flags != 0 {
        return Err(Error::UnsupportedFlags(flags));
    }
    Ok((version, u32_at(bytes, 8)))
}

fn check_end(bytes: &[u8], pos: usize) -> Result<()> {
    match bytes.len() - pos {
        0 => Ok(()),
        extra => Err(Error::TrailingBytes(extra as u64)),
    }
}

fn need(rest: &[u8], needed: u64) -> Result<()> {
    if (rest.len() as u64) < needed {
        return Err(Error::Truncated { needed, available: rest.len() as u64 });
    }
    Ok(())
}

/// Recomputes, in place, the header CRC and the CRC of every record of a
/// serialized container, as far as its size fields can be followed; all other
/// bytes stay as they are.
///
/// For tests and fuzzing only: a corrupted container with fresh CRCs gets past
/// the checksums into the validation and decoding behind them.
#[doc(hidden)]
pub fn reseal_crcs(b: &mut [u8]) {
    if b.len() < CONTAINER_HEADER_BYTES {
        return;
    }
    let crc = crc32c::crc32c(&b[..12]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    let mut pos = CONTAINER_HEADER_BYTES;
    // Every record is at least TENSOR_HEADER_BYTES long, so the input bounds the loop.
    for _ in 0..u32_at(b, 8) {
        let rest = &b[pos..];
        if rest.len() < TENSOR_HEADER_BYTES {
            return;
        }
        let n = u64_at(rest, 0);
        if n >= MAX_ELEMENTS {
            return;
        }
        let layout = Layout::from_code(rest[RECORD_LAYOUT_BYTE]).unwrap_or(Layout::Lanes);
        let len = record_len(n, u32_at(rest, 12) as u64, u32_at(rest, 16) as u64, layout);
        if len > rest.len() as u64 {
            return;
        }
        let len = len as usize;
        let crc = crc32c::crc32c(&rest[..len - 4]);
        b[pos + len - 4..pos + len].copy_from_slice(&crc.to_le_bytes());
        pos += len;
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The little-endian bytes of `v`: a view on a little-endian host.
fn u32_bytes(v: &[u32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(v))
    } else {
        Cow::Owned(v.iter().flat_map(|w| w.to_le_bytes()).collect())
    }
}

/// The little-endian `u32`s of `b`: a view where `b` is 4-byte aligned on a
/// little-endian host (the records df11 writes into safetensors files
/// usually are), a copy otherwise.
fn u32s(b: &[u8]) -> Cow<'_, [u32]> {
    if cfg!(target_endian = "little")
        && let Ok(v) = bytemuck::try_cast_slice(b)
    {
        return Cow::Borrowed(v);
    }
    Cow::Owned(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// CRC32C of bf16 bit patterns as little-endian `u16`s: the `data_crc` field.
pub fn data_crc(bits: &[u16]) -> u32 {
    data_crc_append(0, bits)
}

/// Continues `crc`, the [`data_crc`] of some elements, with those in `bits`.
pub fn data_crc_append(crc: u32, bits: &[u16]) -> u32 {
    if cfg!(target_endian = "little") {
        crc32c::crc32c_append(crc, bytemuck::cast_slice(bits))
    } else {
        let mut crc = crc;
        for chunk in bits.chunks(4096) {
            let le: Vec<u8> = chunk.iter().flat_map(|b| b.to_le_bytes()).collect();
            crc = crc32c::crc32c_append(crc, &le);
        }
        crc
    }
}

//! Format constants of the df11 container, versions 1 to 3.
//!
//! `docs/FORMAT.md` is the prose specification; this module is the one place
//! its numbers live. The host encoder, the CPU decoders, the container parser
//! and the GPU kernel all import them from here.

/// First four bytes of every serialized container.
pub const MAGIC: [u8; 4] = *b"DF11";

/// Newest container version: version 2 added the record's `layout` byte
/// and the lanes layout, version 3 the lanes9 layout. Readers accept
/// [`FIRST_VERSION`] to `VERSION`; writers write the lowest version that can
/// hold their records, so warp-layout containers stay version 1 and lanes
/// containers version 2.
pub const VERSION: u16 = 3;

/// Oldest container version that may hold lanes-layout records.
pub const LANES_VERSION: u16 = 2;

/// Oldest container version that may hold lanes9-layout records.
pub const LANES9_VERSION: u16 = 3;

/// Oldest container version still read: every record has the warp layout.
pub const FIRST_VERSION: u16 = 1;

/// Offset of a record's `layout` byte from the record's start (reserved and
/// zero in version 1).
pub const RECORD_LAYOUT_BYTE: usize = 22;

/// Record layout 0: the 32 lane streams of a segment interleaved word by word
/// in the order a warp asks for them (FORMAT.md section 7), so a GPU warp reads
/// its segment with coalesced loads. The only layout of version 1.
pub const LAYOUT_WARP: u8 = 0;

/// Record layout 1 (version 2): each lane's stream stored whole, as bytes,
/// with its own start offset (FORMAT.md section 8), so a CPU core decodes
/// several lanes at once from independent streams.
pub const LAYOUT_LANES: u8 = 1;

/// Record layout 2 (version 3): the lanes layout's streams, but each code
/// stands for a 9-bit symbol, the exponent and the mantissa's top bit
/// (FORMAT.md section 12), and the other 7 bits of each element are stored
/// raw, 8 elements in 7 bytes. Given the exponent, the mantissa's top bit of
/// real weights is not a fair coin (smaller magnitudes are likelier within
/// a binade), and a 512-symbol code is closer to its entropy.
pub const LAYOUT_LANES9: u8 = 2;

/// Size of the container header in bytes.
pub const CONTAINER_HEADER_BYTES: usize = 16;

/// Size of the fixed part of a tensor record, before the segment offsets.
pub const TENSOR_HEADER_BYTES: usize = 160;

/// Number of exponent symbols (all 256 bf16 exponent values are codable).
pub const SYMBOLS: usize = 256;

/// Bytes holding the 256 code lengths, two 4-bit lengths per byte.
pub const CODE_LENGTH_BYTES: usize = SYMBOLS / 2;

/// Number of lanes9 symbols: exponent and the mantissa's top bit.
pub const SYMBOLS9: usize = 512;

/// Bytes holding the 512 code lengths of a lanes9 record.
pub const CODE_LENGTH_BYTES9: usize = SYMBOLS9 / 2;

/// Size of the fixed part of a lanes9 record, before the segment offsets:
/// the code-length table is 128 bytes longer.
pub const TENSOR_HEADER_BYTES9: usize = TENSOR_HEADER_BYTES + CODE_LENGTH_BYTES9 - CODE_LENGTH_BYTES;

/// Raw bytes of one lanes9 group of [`LANE_RUN`] consecutive elements: 7
/// bits each (FORMAT.md section 12).
pub const RAW9_GROUP_BYTES: usize = 7;

/// Longest permitted exponent code, in bits.
///
/// 12 bits let one lookup in a 4096-entry table decode any symbol, and the
/// table (2 bytes per entry, 8 KiB) fits many times into a block's shared
/// memory. Measured cost on realistic weights: 0.002–0.006 bits/weight over
/// unlimited Huffman codes (docs/PERFORMANCE.md).
pub const MAX_CODE_LEN: u32 = 12;

/// Index width of the single-level decode table.
pub const TABLE_BITS: u32 = MAX_CODE_LEN;

/// Entries in the decode table.
pub const TABLE_SIZE: usize = 1 << TABLE_BITS;

/// Lanes that decode one segment together: one warp.
pub const LANES: usize = 32;

/// Consecutive elements a lane owns in one row. Eight bf16 outputs are one
/// 16-byte store; eight sign+mantissa bytes one 8-byte load.
pub const LANE_RUN: usize = 8;

/// Elements in one row of a segment: every lane's run, side by side, so a warp
/// writes 512 contiguous bytes per row.
pub const ROW_ELEMS: usize = LANES * LANE_RUN;

/// Bits in one word of a lane's code stream.
pub const WORD_BITS: u32 = 32;

/// Rows per segment chosen by the encoder unless told otherwise.
///
/// 1024 rows make a segment of 262,144 elements, 8,192 per lane. A lane leaves
/// about 25 bits unread at the end of its stream (the refill rule's tail), so
/// the tail costs 25/8192 ≈ 0.003 bits/weight; at 256 rows it was 0.012, which
/// put realistic tensors 0.003–0.006 bits/weight over the ratio target of
/// 8 + H + 0.05 (measured, docs/PERFORMANCE.md). A 200 M-weight transformer
/// block still splits into ~760 independent warps. The value is stored per
/// tensor, so decoders accept any R and latency-bound users can choose fewer rows.
pub const DEFAULT_SEGMENT_ROWS: u32 = 1024;

/// Largest permitted rows-per-segment value (keeps a segment's element count
/// and its word count comfortably inside `u32`).
pub const MAX_SEGMENT_ROWS: u32 = 1 << 16;

// ---------------------------------------------------------------------------
// The GPU decoder's interface (not part of the container bytes). The host
// launcher lays a group out in device memory this way; the kernel reads it.

/// `u32` words holding one decode table in device and shared memory (two
/// 16-bit entries per word, the even entry in the low half).
pub const TABLE_WORDS: usize = TABLE_SIZE / 2;

/// `u32` words of one multi-symbol decode table of the lanes kernel
/// (`crate::table::build_multi`): two per entry.
pub const MULTI_TABLE_WORDS: usize = 2 * TABLE_SIZE;

/// `u64` words of one tensor descriptor (`decode::TensorDesc`).
pub const DESC_WORDS: usize = 9;

/// Error-flag bit: a segment consumed a different number of words than its
/// offsets give it, or (lanes layout) a lane's stream does not end in its
/// last word followed by zero bits: a corrupt stream or offsets. Its output
/// is garbage.
pub const ERR_WORD_COUNT: u32 = 1;

/// Error-flag bit: the launch shape does not fit the kernel (block size not a
/// multiple of 32, or too little shared memory); nothing was decoded.
pub const ERR_LAUNCH: u32 = 2;

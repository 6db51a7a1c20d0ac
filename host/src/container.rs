//! The in-memory form of a compressed tensor and of a group of tensors, and
//! their byte serialization (`docs/FORMAT.md`).

/// One compressed bf16 tensor: a record of the df11 container format.
///
/// Fields are public so decoders and the GPU uploader can read them directly;
/// [`CompressedTensor::validate`] checks every invariant `docs/FORMAT.md` states,
/// and every decoder calls it (or relies on a caller that did) before touching data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressedTensor {
    /// Number of bf16 elements (N).
    pub num_elements: u64,
    /// Rows of 256 elements per segment (R).
    pub segment_rows: u32,
    /// Longest code length; 0 means every exponent is `only_symbol`.
    pub max_len: u8,
    /// The single exponent when `max_len == 0` and N > 0; 0 otherwise.
    pub only_symbol: u8,
    /// Code length of each exponent value, 0 = absent.
    pub code_lengths: [u8; 256],
    /// CRC32C of the original tensor as little-endian `u16`s.
    pub data_crc: u32,
    /// Start word of each segment, then the total word count (S + 1 entries).
    pub segment_offsets: Vec<u32>,
    /// Interleaved lane code streams.
    pub words: Vec<u32>,
    /// Raw sign+mantissa byte per element.
    pub sign_mantissa: Vec<u8>,
}

/// Several tensors decoded together, e.g. all weights of a transformer block:
/// one container, one kernel launch, one output buffer (tensors back to back).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// The tensors, in output order.
    pub tensors: Vec<CompressedTensor>,
}

//! Fast CPU codec paths.

pub mod decode;
#[doc(hidden)]
pub mod scratch;

pub use decode::{
    DecodeOptions, decode_fast_into, decode_fast_into_with, decode_parallel, decode_parallel_into,
    decode_parallel_into_with,
};

/// Decoder errors (stand-in until the crate error type lands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Output buffer of the wrong size.
    OutputLength {
        /// Elements the tensor holds.
        expected: u64,
        /// Elements the buffer holds.
        actual: u64,
    },
    /// A segment's words do not match its codes.
    CorruptStream {
        /// Index of the segment.
        segment: u64,
    },
    /// Data CRC mismatch.
    Checksum {
        /// Stored CRC.
        expected: u32,
        /// CRC of the decoded data.
        actual: u32,
    },
    /// A structural field is invalid.
    Invalid {
        /// Field name.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// Decoder result.
pub type Result<T> = core::result::Result<T, DecodeError>;

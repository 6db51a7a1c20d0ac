//! The crate-wide error type.

use thiserror::Error;

/// Everything that can go wrong reading, validating or decoding a df11 container.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input ends before a structure it announces.
    #[error("input truncated: {needed} bytes needed, only {available} available")]
    Truncated {
        /// Bytes the structure needs from where it starts.
        needed: u64,
        /// Bytes left in the input from that point.
        available: u64,
    },
    /// The input does not start with `DF11`.
    #[error("not a df11 container (bad magic bytes)")]
    BadMagic,
    /// A container version this build does not read.
    #[error("unsupported df11 container version {0} (this build reads versions 1 to 3)")]
    UnsupportedVersion(u16),
    /// Container flags this build does not understand.
    #[error("unsupported df11 container flags {0:#06x}")]
    UnsupportedFlags(u16),
    /// A stored CRC32C does not match the data: the data is corrupt.
    #[error("{what} checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): data is corrupt")]
    Checksum {
        /// Which checksum: `"header"`, `"record"` or `"data"`.
        what: &'static str,
        /// The value in the container.
        stored: u32,
        /// The value computed from the bytes.
        computed: u32,
    },
    /// A field violates an invariant of the format.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes follow the end of the container.
    #[error("{0} unexpected trailing bytes after the container")]
    TrailingBytes(u64),
    /// The caller's output buffer has the wrong length.
    #[error("output buffer holds {actual} elements but the tensor has {expected}")]
    OutputLength {
        /// Elements in the tensor (or group).
        expected: u64,
        /// Elements the buffer holds.
        actual: u64,
    },
    /// A segment's code stream reads past its words or leaves words unread.
    #[error("corrupt code stream in segment {segment}")]
    CorruptStream {
        /// Index of the segment.
        segment: u64,
    },
    /// A GPU driver or launch failure.
    #[error("GPU error: {0}")]
    Gpu(String),
}

/// `Result` with [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid { field, reason: reason.into() }
    }
}

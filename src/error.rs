//! The CLI's error: one human-readable line, already naming the file (and the
//! tensor) it is about. The checkpoint API's errors carry that context
//! themselves and convert as they are.

use std::fmt;

/// A one-line error message for the user.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The CLI's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error`] from a format string.
macro_rules! err {
    ($($arg:tt)*) => { $crate::error::Error(format!($($arg)*)) };
}

/// Returns early with an [`Error`] built from a format string.
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::err!($($arg)*)) };
}

pub(crate) use {bail, err};

impl From<df11::checkpoint::Error> for Error {
    fn from(e: df11::checkpoint::Error) -> Self {
        Error(e.to_string())
    }
}

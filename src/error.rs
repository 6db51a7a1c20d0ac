//! The CLI's error: one human-readable line, already naming the file (and the
//! tensor) it is about. Library errors are converted at the call site, where
//! that context is known.

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

/// Adds the path to an I/O error: "reading x.safetensors: Permission denied".
pub trait IoContext<T> {
    /// Wraps the error with `what` and the path.
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error(format!("{what} {}: {}", path.display(), plain_io_message(&e))))
    }
}

/// The OS message without Rust's " (os error N)" suffix, which means nothing to users.
fn plain_io_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

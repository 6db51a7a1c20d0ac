//! The checkpoint API's error: every variant names the file (and the tensor
//! or module, where there is one), so a message alone tells the user where to
//! look.

use std::path::PathBuf;

/// Why a checkpoint could not be opened, decoded or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed; `what` says which (`"cannot open"`, `"cannot write"`, ...).
    #[error("{what} {}: {}", path.display(), plain_io_message(source))]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not valid safetensors (its header, or one tensor's entry in it).
    #[error("{}: not a valid safetensors file: {}{msg}", path.display(), tensor_prefix(tensor))]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The tensor whose entry is wrong, if the fault is one tensor's.
        tensor: Option<String>,
        /// What is wrong.
        msg: String,
    },
    /// A tensor is not what its metadata says, cannot be decoded, or does not
    /// fit the buffer it was asked to go into.
    #[error("{}: tensor {tensor}: {msg}", path.display())]
    Tensor {
        /// The file holding it (the output file, for a write).
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// A DFloat11 module is malformed or does not decode.
    #[error("{}: DFloat11 module {module}: {msg}", path.display())]
    Module {
        /// The file holding it.
        path: PathBuf,
        /// The module name (the arrays' common prefix).
        module: String,
        /// What is wrong.
        msg: String,
    },
    /// The checkpoint as a whole is malformed: its directory, index, config,
    /// df11 metadata or shapes file.
    #[error("{}: {msg}", path.display())]
    Checkpoint {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// No tensor of that name is in the checkpoint.
    #[error("{}: no tensor named {tensor}", path.display())]
    NotFound {
        /// The checkpoint.
        path: PathBuf,
        /// The name asked for.
        tensor: String,
    },
    /// The GPU decoder failed.
    #[error("{}: {context}: {source}", path.display())]
    Gpu {
        /// The checkpoint.
        path: PathBuf,
        /// What was being done (`"GPU upload"`, ...), with the tensor where known.
        context: String,
        /// The cause.
        source: df11_host::Error,
    },
}

/// The checkpoint API's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn tensor_prefix(t: &Option<String>) -> String {
    t.as_ref().map_or(String::new(), |t| format!("tensor {t}: "))
}

/// The OS message without Rust's " (os error N)" suffix, which means nothing to users.
fn plain_io_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Adds the path to an I/O error: "cannot read x.safetensors: Permission denied".
pub(crate) trait IoContext<T> {
    /// Wraps the error with `what` and the path.
    fn ctx(self, what: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io { what, path: path.to_path_buf(), source })
    }
}

/// An [`Error::Checkpoint`] about `path`.
pub(crate) fn at(path: &std::path::Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), msg: msg.into() }
}

/// An [`Error::Tensor`] about `tensor` in `path`.
pub(crate) fn tensor_err(path: &std::path::Path, tensor: &str, msg: impl Into<String>) -> Error {
    Error::Tensor { path: path.to_path_buf(), tensor: tensor.to_string(), msg: msg.into() }
}

//! Running a Llama-family model from compressed weights (df11 or DFloat11
//! checkpoints) on candle.
//!
//! DFloat11's way of serving a model: every transformer block's weights stay
//! compressed in memory, and each block is decoded just before its forward
//! pass into one shared, reused buffer whose views are the block's weights
//! (bf16 on CUDA; f32 on the CPU, where candle multiplies bf16 in f32).
//! Memory holds the compressed model plus one block, and the outputs are
//! bit-identical to the bf16 model's, since decoding is lossless.
//!
//! * [`source`]: weights from a [`crate::checkpoint::Checkpoint`] (df11,
//!   plain safetensors or DFloat11), and [`CheckpointBackend`], a checkpoint
//!   as a candle `VarBuilder` backend for any candle model.
//! * [`store`]: [`BlockStore`] (compressed blocks, per-block decode) and
//!   [`PlainWeights`] (everything decoded), behind the [`Weights`] trait.
//! * [`backend`]: named tensors (a decoded block) as a `VarBuilder` backend.
//! * [`llama`]: the model (Llama, Mistral, Qwen2, Qwen3).
//! * [`run`]: greedy generation, the bf16 comparison and `df11 run`.
//!
//! # `df11 run`
//!
//! [`run_cli`] is the whole subcommand: the CLI parses its flags into a
//! [`RunArgs`] and prints the [`RunReport`] (`serde_json::to_value` for
//! `--json`). Its keys: `device`, `prompt_tokens`, `tokens` (generated ids),
//! `text` (with `--prompt`), `tokens_per_s` (decode phase), `ttft_s`,
//! `block_decode_s` (mean seconds per block decode) and `block_decodes`,
//! `weight_bytes_resident` (compressed blocks + one block buffer + decoded
//! non-block weights), `weight_bytes_bf16` (all weights decoded),
//! `weight_bytes` (the parts), `logits_identical` (`true`/`false` with
//! `--compare-bf16`, else `null`) and `bf16` (the comparison run's tokens,
//! speed and memory, or `null`).
//!
//! On CUDA (feature `candle-cuda`) the compressed blocks are uploaded once and
//! each block is one launch of df11's GPU decoder into the buffer.
//!
//! # Building with `candle-cuda`
//!
//! candle's CUDA backend links cudarc with `dynamic-linking`, df11's `cuda`
//! feature loads the driver at run time (`dynamic-loading`), and cudarc
//! refuses both at once: build with `--no-default-features --features
//! candle-cuda` (`scripts/build-cuda.sh`), which brings the decoder through
//! df11's `gpu` feature without a linking mode of its own. The decoder runs in
//! candle's CUDA context ([`crate::gpu::decoder_on`]), so it can decode into
//! candle's buffers on candle's stream.

pub mod backend;
#[cfg(feature = "candle-cuda")]
mod cuda;
pub mod llama;
pub mod run;
pub mod source;
pub mod store;

pub use backend::TensorMap;
pub use llama::{Config, Model};
pub use run::{Generation, RunArgs, RunReport, WeightMode, generate, logits_identical, open_model, run_cli};
pub use source::{CheckpointBackend, load_tensor, open_checkpoint};
pub use store::{BlockStore, PlainWeights, WeightBytes, Weights};

use std::path::{Path, PathBuf};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or decoding the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::Error),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A checkpoint, config or argument is not what the model needs.
    #[error("{0}")]
    Format(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

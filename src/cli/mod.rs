//! The `df11` subcommands, one module each, and what they share.

pub mod compress;
pub mod decompress;
pub mod inspect;
#[cfg(feature = "candle")]
pub mod run;
pub mod verify;

use df11::checkpoint::{CpuDecoder, Decoder};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Options every command shares.
#[derive(Clone, Copy, Debug)]
pub struct Common {
    /// `-q`: print nothing but errors.
    pub quiet: bool,
}

impl Common {
    /// Prints a warning unless quiet.
    pub fn warn(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// A byte progress bar on stderr, drawn only when stderr is a terminal.
    pub fn progress(&self, total: u64) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
                .expect("template is valid"),
        );
        bar
    }
}

/// The decoder selected on the command line: the CPU one, or with `gpu` the
/// GPU one on device 0 (an error if this machine has no usable GPU).
pub fn decoder(gpu: bool) -> crate::error::Result<Box<dyn Decoder>> {
    #[cfg(feature = "gpu")]
    if gpu {
        let d = df11::checkpoint::gpu::GpuHostDecoder::on_device(0)
            .map_err(|e| crate::error::err!("--gpu: cannot start the GPU decoder: {e}"))?;
        return Ok(Box::new(d));
    }
    #[cfg(not(feature = "gpu"))]
    if gpu {
        return Err(crate::error::err!("--gpu: this df11 was built without its `cuda` feature"));
    }
    Ok(Box::new(CpuDecoder))
}

/// Opens a checkpoint with the CLI's warnings.
pub fn open(
    path: &std::path::Path,
    shapes: Option<&std::path::Path>,
    common: Common,
) -> crate::error::Result<df11::checkpoint::Checkpoint> {
    let warn = |m: &str| common.warn(m);
    Ok(df11::checkpoint::Checkpoint::open_with(
        path,
        &df11::checkpoint::OpenOptions { shapes_file: shapes, warn: Some(&warn) },
    )?)
}

/// `1.50 GiB`-style sizes for summaries.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.2} GiB", b / 1_073_741_824.0),
    }
}

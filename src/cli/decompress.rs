//! `df11 decompress`: a df11 or DFloat11 checkpoint back to plain safetensors.

use super::{Common, human};
use crate::error::Result;
use df11::checkpoint::output::check_output;
use df11::checkpoint::{Decoder, Kind, WriteOptions};
use std::path::Path;
use std::time::Instant;

/// `df11 decompress IN -o OUT`.
pub fn run(
    input: &Path,
    output: &Path,
    shapes: Option<&Path>,
    force: bool,
    dec: &dyn Decoder,
    common: Common,
) -> Result<()> {
    check_output(output, &[input], force)?;
    let start = Instant::now();
    let ckpt = super::open(input, shapes, common)?;
    if ckpt.kind() == Kind::Plain {
        common.warn(&format!("warning: {}: holds no compressed tensors; copying it", input.display()));
    }
    let stored: u64 = ckpt.units().map(|(_, u)| u.stored_bytes()).sum();
    let total: u64 = ckpt.units().fold(0u64, |a, (_, u)| a.saturating_add(u.plain_bytes()));
    let bar = common.progress(total);
    let t = ckpt.write_to(output, &WriteOptions { decoder: dec, progress: &|n| bar.inc(n), ..Default::default() })?;
    bar.finish_and_clear();
    if !common.quiet {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{}: {} tensors, {} -> {} (compressed data was {:.1}% of it), {:.1} s, {}/s",
            output.display(),
            t.tensors,
            human(stored),
            human(t.written),
            100.0 * stored as f64 / t.written.max(1) as f64,
            secs,
            human((t.written as f64 / secs.max(1e-9)) as u64)
        );
    }
    Ok(())
}

//! `df11 decompress`: a df11 or DFloat11 checkpoint back to plain safetensors.

use super::compress::rewrite;
use super::load::{Kind, Loaded};
use super::{Common, human};
use crate::checkpoint::check_output;
use crate::codec::Decoder;
use crate::error::Result;
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
    let loaded = Loaded::open(input, shapes, &|m| common.warn(m))?;
    if loaded.kind == Kind::Plain {
        common.warn(&format!("warning: {}: holds no compressed tensors; copying it", input.display()));
    }
    let stored: u64 = loaded.items().map(|(_, i)| i.stored_bytes()).sum();
    let t = rewrite(&loaded, output, dec, None, common)?;
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

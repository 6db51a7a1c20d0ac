//! `df11 compress`.

use super::{Common, human};
use crate::error::{Result, bail};
use df11::EncodeOptions;
use df11::checkpoint::output::check_output;
use df11::checkpoint::{CpuDecoder, Kind, WriteOptions};
use std::path::Path;
use std::time::Instant;

/// `df11 compress IN -o OUT`.
pub fn run(
    input: &Path,
    output: &Path,
    shapes: Option<&Path>,
    force: bool,
    opts: EncodeOptions,
    common: Common,
) -> Result<()> {
    check_output(output, &[input], force)?;
    let start = Instant::now();
    let ckpt = super::open(input, shapes, common)?;
    if ckpt.kind() == Kind::Df11 {
        bail!("{}: is already a df11 checkpoint", input.display());
    }
    let total: u64 = ckpt.units().fold(0u64, |a, (_, u)| a.saturating_add(u.plain_bytes()));
    let bar = common.progress(total);
    let t =
        ckpt.write_to(output, &WriteOptions { encode: Some(opts), decoder: &CpuDecoder, progress: &|n| bar.inc(n) })?;
    bar.finish_and_clear();
    if !common.quiet {
        let secs = start.elapsed().as_secs_f64();
        let bpw = if t.bf16_elems > 0 { t.bf16_compressed as f64 * 8.0 / t.bf16_elems as f64 } else { 16.0 };
        eprintln!(
            "{}: {} tensors, {} -> {} ({:.1}%), BF16 weights at {:.3} bits/weight (ratio {:.3}), {:.1} s, {}/s",
            output.display(),
            t.tensors,
            human(t.plain),
            human(t.written),
            100.0 * t.written as f64 / t.plain.max(1) as f64,
            bpw,
            bpw / 16.0,
            secs,
            human((t.plain as f64 / secs.max(1e-9)) as u64)
        );
    }
    Ok(())
}

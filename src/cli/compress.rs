//! `df11 compress`.

use super::{Common, human};
use crate::error::{Result, bail, err};
use df11::EncodeOptions;
use df11::checkpoint::output::check_output;
use df11::checkpoint::{Kind, WriteOptions};
use df11::dfloat11::patterns::{PatternDict, PatternError};
use df11::dfloat11::write::{self as dfw, EncodeError, Unencodable, WriteError};
use std::path::Path;
use std::time::Instant;

/// Other files of a directory that add up to this much are worth a warning:
/// more than configs and tokenizers ever take.
const OTHERS_WORTH_SAYING: u64 = 64 << 20;

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
        ckpt.write_to(output, &WriteOptions { encode: Some(opts), progress: &|n| bar.inc(n), ..Default::default() })?;
    bar.finish_and_clear();
    if let Some((largest, size)) = &t.largest_other
        && t.others_bytes >= OTHERS_WORTH_SAYING
    {
        // Weights in another format (`pytorch_model.bin`, `.gguf`) beside
        // the safetensors files: copied, so the output is no smaller by them.
        common.warn(&format!(
            "warning: {} other files ({}) copied as they were, the largest {} ({}); df11 compresses .safetensors files only",
            t.others,
            human(t.others_bytes),
            largest.display(),
            human(*size)
        ));
    }
    if t.bf16_elems == 0 {
        // An F32 or F16 checkpoint: written, but the user should know why it is no smaller.
        common.warn(&format!(
            "warning: {}: no BF16 tensors, so nothing was compressed (df11 compresses BF16 weights only)",
            input.display()
        ));
    }
    if !common.quiet {
        let secs = start.elapsed().as_secs_f64();
        // Raw fallbacks count in the BF16 figure at their 16 bits/weight.
        let what = match t.bf16_raw {
            0 => format!("{} tensors", t.tensors),
            n => format!("{} tensors ({n} BF16 stored raw, too small to gain)", t.tensors),
        };
        summary(output, &what, (t.plain, t.written), (t.bf16_elems, t.bf16_stored), secs);
    }
    Ok(())
}

/// `df11 compress IN -o OUT --format dfloat11`.
pub fn run_dfloat11(
    input: &Path,
    output: &Path,
    pattern_dict: Option<&Path>,
    keep_unencodable: bool,
    force: bool,
    common: Common,
) -> Result<()> {
    check_output(output, &[input], force)?;
    let start = Instant::now();
    let dict = pattern_dict.map(PatternDict::from_file).transpose().map_err(|e| err!("--pattern-dict: {e}"))?;
    let unencodable = if keep_unencodable { Unencodable::KeepUncompressed } else { Unencodable::Error };
    let opts = dfw::WriteOptions { pattern_dict: dict, unencodable, force, ..dfw::WriteOptions::default() };
    let r = dfw::write_checkpoint(input, output, &opts).map_err(|e| match e {
        WriteError::Encode { source: EncodeError::Unencodable { .. }, .. } => {
            err!("{}: {e} (--keep-unencodable stores such modules uncompressed)", input.display())
        }
        WriteError::Pattern(PatternError::UnknownModel { .. }) => err!("{}: {e} (--pattern-dict)", input.display()),
        WriteError::Encode { .. } | WriteError::Input(_) | WriteError::Pattern(_) => {
            err!("{}: {e}", input.display())
        }
        e => err!("{e}"),
    })?;
    for (module, reason) in &r.kept_modules {
        common.warn(&format!("warning: module {module} kept uncompressed: {reason}"));
    }
    if !common.quiet {
        let what = format!("{} tensors, {} DFloat11 modules", r.tensors, r.compressed_modules);
        let kept = r.kept_modules.len();
        let what = if kept > 0 { format!("{what} ({kept} kept uncompressed)") } else { what };
        let secs = start.elapsed().as_secs_f64();
        summary(output, &what, (r.input_bytes, r.output_bytes), (r.encoded_elements, r.encoded_bytes), secs);
    }
    Ok(())
}

/// The summary line of both formats: what was written, `(plain, written)`
/// bytes, `(elements, stored bytes)` of the BF16 weights, seconds.
fn summary(output: &Path, what: &str, (plain, written): (u64, u64), (elems, stored): (u64, u64), secs: f64) {
    let bf16 = match elems {
        0 => String::new(),
        _ => {
            let bpw = stored as f64 * 8.0 / elems as f64;
            format!(", BF16 weights at {bpw:.3} bits/weight (ratio {:.3})", bpw / 16.0)
        }
    };
    eprintln!(
        "{}: {what}, {} -> {} ({:.1}%){bf16}, {:.1} s, {}/s",
        output.display(),
        human(plain),
        human(written),
        100.0 * written as f64 / plain.max(1) as f64,
        secs,
        human((plain as f64 / secs.max(1e-9)) as u64)
    );
}

//! `df11 run MODEL_DIR`: greedy generation from a compressed checkpoint with
//! per-block decoding (`df11::candle::run_cli` does the work), optionally
//! compared bit for bit with the plain bf16 model.

use super::human;
use crate::error::{Result, err};
use df11::candle::{RunArgs, RunReport, run_cli};
use std::fmt::Write as _;

/// Runs the model and prints the report (one JSON object with `json`).
pub fn run(args: &RunArgs, json: bool) -> Result<()> {
    let report = run_cli(args).map_err(|e| err!("run {}: {e}", args.model.display()))?;
    let out = if json {
        serde_json::to_string_pretty(&report).map_err(|e| err!("cannot print the report: {e}"))? + "\n"
    } else {
        summary(&report)
    };
    // A closed pipe (`df11 run ... | head`) is not worth an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    if report.logits_identical == Some(false) {
        return Err(err!("the logits differ from the bf16 model's"));
    }
    Ok(())
}

fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    let ids = |t: &[u32]| t.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let _ = writeln!(s, "device:            {}", r.device);
    let _ = writeln!(s, "prompt tokens:     {}", ids(&r.prompt_tokens));
    let _ = writeln!(s, "generated tokens:  {}", ids(&r.tokens));
    if let Some(t) = &r.text {
        let _ = writeln!(s, "text:              {t}");
    }
    let _ = writeln!(s, "tokens/s:          {:.2}", r.tokens_per_s);
    let _ = writeln!(s, "time to 1st token: {:.3} s", r.ttft_s);
    let _ = writeln!(s, "block decode:      {:.3} ms ({} decodes)", r.block_decode_s * 1e3, r.block_decodes);
    let _ = writeln!(
        s,
        "weights resident:  {} (bf16: {}, {:.1}%)",
        human(r.weight_bytes_resident),
        human(r.weight_bytes_bf16),
        100.0 * r.weight_bytes_resident as f64 / r.weight_bytes_bf16.max(1) as f64
    );
    if let Some(b) = &r.bf16 {
        let _ = writeln!(
            s,
            "bf16 model:        {:.2} tokens/s, {} resident",
            b.tokens_per_s,
            human(b.weight_bytes_resident)
        );
    }
    let same = match r.logits_identical {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "not compared (--compare-bf16 DIR)",
    };
    let _ = writeln!(s, "logits identical:  {same}");
    s
}

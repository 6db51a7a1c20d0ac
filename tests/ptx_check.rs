//! Assembles the embedded PTX with NVIDIA's `ptxas` for the architectures we
//! target and fails on any error, any spill or any stack frame: local memory in
//! a decode kernel costs bandwidth we cannot spare.
//!
//! `ptxas` comes from `DF11_PTXAS` or `PATH` (`scripts/setup.sh` installs it).
//! Without it the test says it skipped, unless `DF11_REQUIRE_PTXAS` is set, as
//! the test script does for CI.

use std::path::PathBuf;
use std::process::Command;

fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DF11_PTXAS") {
        return Some(PathBuf::from(p));
    }
    Command::new("ptxas").arg("--version").output().ok().filter(|o| o.status.success()).map(|_| "ptxas".into())
}

/// Per-function figures from `ptxas -v`.
#[derive(Debug, Default)]
struct Function {
    name: String,
    entry: bool,
    stack: u64,
    spill_stores: u64,
    spill_loads: u64,
    used: String,
}

fn number_before(line: &str, unit: &str) -> u64 {
    let i = line.find(unit).unwrap_or_else(|| panic!("`{unit}` missing in ptxas line: {line}"));
    let digits: String = line[..i].trim_end().chars().rev().take_while(|c| c.is_ascii_digit()).collect();
    digits.chars().rev().collect::<String>().parse().unwrap_or_else(|_| panic!("no number before `{unit}`: {line}"))
}

fn parse(report: &str) -> Vec<Function> {
    let mut funcs: Vec<Function> = Vec::new();
    let mut entries = Vec::new();
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            entries.push(rest.split('\'').next().unwrap_or_default().to_string());
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            let name = rest.trim().to_string();
            funcs.push(Function { entry: entries.contains(&name), name, ..Default::default() });
        } else if line.contains("bytes stack frame") {
            let f = funcs.last_mut().expect("figures follow a function header");
            f.stack = number_before(line, "bytes stack frame");
            f.spill_stores = number_before(line, "bytes spill stores");
            f.spill_loads = number_before(line, "bytes spill loads");
        } else if let (Some(rest), Some(f)) = (line.split("ptxas info    : Used ").nth(1), funcs.last_mut()) {
            f.used = format!("Used {}", rest.trim());
        }
    }
    funcs
}

#[test]
fn ptx_assembles_without_spills_or_stack() {
    let Some(ptxas) = ptxas() else {
        assert!(
            std::env::var_os("DF11_REQUIRE_PTXAS").is_none(),
            "DF11_REQUIRE_PTXAS is set but no ptxas was found (set DF11_PTXAS or run scripts/setup.sh)"
        );
        eprintln!("SKIPPED: ptxas not found; set DF11_PTXAS or run scripts/setup.sh to check the PTX");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let ptx_path = dir.path().join("df11.ptx");
    std::fs::write(&ptx_path, df11::PTX).expect("write PTX");
    // The decode kernel's shared memory is dynamic (sized at launch), so ptxas
    // cannot report it: one decode table per block.
    println!(
        "df11_decode_group dynamic shared memory: {} bytes per block (one {}-entry decode table)",
        df11::format::TABLE_WORDS * 4,
        df11::format::TABLE_SIZE
    );
    for arch in ["sm_80", "sm_90"] {
        let out = Command::new(&ptxas)
            .args(["-v", &format!("-arch={arch}"), "-o"])
            .arg(dir.path().join(format!("{arch}.cubin")))
            .arg(&ptx_path)
            .output()
            .expect("run ptxas");
        let report = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ptxas rejected the PTX for {arch}:\n{report}");
        assert!(!report.contains("error"), "ptxas reported an error for {arch}:\n{report}");
        let funcs = parse(&report);
        for name in df11::KERNEL_NAMES {
            assert!(funcs.iter().any(|f| f.entry && f.name == *name), "kernel {name} missing from {arch} report");
        }
        for f in &funcs {
            println!(
                "ptxas {arch} {} {}: stack {} B, spill stores {} B, spill loads {} B; {}",
                if f.entry { "kernel" } else { "function" },
                f.name,
                f.stack,
                f.spill_stores,
                f.spill_loads,
                f.used
            );
            assert_eq!((f.stack, f.spill_stores, f.spill_loads), (0, 0, 0), "{arch} {}: local memory used", f.name);
        }
    }
}

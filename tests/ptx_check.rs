//! Checks of the embedded PTX.
//!
//! * The committed PTX (`gpu/df11_kernels.ptx`, what stable builds and the
//!   published packages embed) must be, byte for byte, what `build.rs` builds
//!   from `gpu/src`. Where the build used the committed file (no pinned
//!   nightly) the check says it skipped, unless `DF11_REQUIRE_PTX_BUILD` is
//!   set, as the test script does for CI. `DF11_UPDATE_PTX=1` rewrites the
//!   committed file instead of failing.
//! * The PTX holds nothing that depends on where it was built.
//! * NVIDIA's `ptxas` assembles it for the architectures we target without
//!   an error, a spill or a stack frame: local memory in a decode kernel
//!   costs bandwidth we cannot spare. `ptxas` comes from `DF11_PTXAS` or
//!   `PATH` (`scripts/setup.sh` installs it); without it the check says it
//!   skipped, unless `DF11_REQUIRE_PTXAS` is set, as the test script does.

use std::path::{Path, PathBuf};
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
fn committed_ptx_is_current() {
    // `built` or `committed`: set by build.rs.
    if env!("DF11_PTX_ORIGIN") != "built" {
        assert!(
            std::env::var_os("DF11_REQUIRE_PTX_BUILD").is_none(),
            "DF11_REQUIRE_PTX_BUILD is set but build.rs embedded the committed PTX: it needs the pinned \
             nightly with rust-src and llvm-tools (`rustup toolchain install` in the repository)"
        );
        eprintln!("SKIPPED: the PTX was not built from gpu/src here (no pinned nightly), so it cannot be compared");
        return;
    }
    if df11::PTX == df11_gpu::PTX {
        return;
    }
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("gpu/df11_kernels.ptx");
    if std::env::var_os("DF11_UPDATE_PTX").is_some_and(|v| v == "1") {
        std::fs::write(&committed, df11::PTX).expect("write the committed PTX");
        eprintln!("updated {}; commit it", committed.display());
        return;
    }
    let line = df11::PTX.lines().zip(df11_gpu::PTX.lines()).position(|(a, b)| a != b).map_or_else(
        || format!("the files differ in length ({} and {} bytes)", df11::PTX.len(), df11_gpu::PTX.len()),
        |i| format!("first difference at line {}", i + 1),
    );
    panic!(
        "gpu/df11_kernels.ptx is not the PTX built from gpu/src ({line}). Refresh it with\n    \
         DF11_UPDATE_PTX=1 cargo test --test ptx_check committed_ptx_is_current\nand commit it."
    );
}

/// Byte-reproducible wherever it is built: no data (a panic location would
/// be a path) and no function but the kernels (the names of `core`'s
/// functions hash the sysroot's path). Both PTX texts are checked: the
/// committed one may be all this build has.
#[test]
fn ptx_holds_nothing_build_specific() {
    for (what, ptx) in [("built", df11::PTX), ("committed", df11_gpu::PTX)] {
        let code: Vec<&str> = ptx.lines().map(|l| l.split("//").next().unwrap_or_default().trim()).collect();
        for l in &code {
            let symbol = l.starts_with(".func") || l.contains(".entry") || l.starts_with(".visible");
            assert!(!l.starts_with(".global") && !l.starts_with(".const"), "{what} PTX holds data: {l}");
            assert!(!symbol || l.starts_with(".visible .entry "), "{what} PTX holds a non-kernel symbol: {l}");
        }
        let entries: Vec<&str> =
            code.iter().filter_map(|l| l.strip_prefix(".visible .entry ")?.split('(').next()).collect();
        assert_eq!(entries, df11::KERNEL_NAMES, "{what} PTX's kernels");
        assert!(!ptx.contains("_R"), "{what} PTX names a mangled Rust symbol");
    }
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

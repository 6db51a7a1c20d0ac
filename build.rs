//! Provides the PTX module that the `df11` crate embeds (`df11::PTX`).
//!
//! Building the kernels from `gpu/` needs the pinned nightly with the
//! `rust-src` and `llvm-tools` components; depending on df11 must not. So the
//! PTX is committed (`gpu/df11_kernels.ptx`, shipped inside `df11-gpu` as
//! `df11_gpu::PTX`) and this script:
//!
//! * rebuilds it from `gpu/src` when that pipeline is available (a nightly
//!   rustc with both components, and the `gpu/` sources next to us, which a
//!   published `df11` package does not have), so a kernel change is live in
//!   the next build;
//! * otherwise embeds the committed file.
//!
//! It tells the crate which one it did in `DF11_PTX_ORIGIN` (`built` or
//! `committed`); `tests/ptx_check.rs` fails in CI when the PTX was not rebuilt
//! or differs from the committed file by a byte.
//!
//! rustc's `nvptx64-nvidia-cuda` target normally links through the rustup
//! component `llvm-bitcode-linker`, which cannot be installed everywhere. For
//! that target rustc's object files are LLVM bitcode, so we do the link step
//! ourselves with the `llvm-tools` component:
//!
//! 1. `cargo build -Zbuild-std=core` of `df11-gpu` for nvptx, in its own target
//!    directory under `OUT_DIR` (no lock contention with the outer build);
//! 2. `llvm-link` our crate's bitcode with the parts of `core` and
//!    `compiler_builtins` it needs;
//! 3. `opt` internalizes everything but the kernel entry points and optimizes;
//! 4. `llc` emits PTX.
//!
//! The PTX must be the same bytes wherever it is built: it holds no path (no
//! debug info, and panics abort in place, so no panic location is kept) and
//! no symbol but the kernels (whose names do not depend on the build).

use serde_json::Value;
use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// sm_80 (Ampere) is the oldest architecture with native bf16, so nobody who
/// stores bf16 weights runs older; PTX for it JIT-compiles forward to sm_90
/// (Hopper) and later. PTX ISA 7.0 is the first that knows sm_80 and needs only
/// a CUDA 11.0 driver, the widest compatibility we can offer.
const PTX_SM: &str = "sm_80";
const PTX_ISA: &str = "+ptx70";
const NVPTX_TARGET: &str = "nvptx64-nvidia-cuda";

fn main() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    let (ptx, origin) = match Pipeline::detect(&root) {
        Ok(tools) => {
            // Only watched when they exist: cargo reruns on every build for a
            // watched path that is missing.
            println!("cargo:rerun-if-changed=gpu/src");
            println!("cargo:rerun-if-changed=gpu/Cargo.toml");
            let rlibs = build_gpu_crate(&root, &out_dir);
            (link_to_ptx(&tools, &rlibs, &out_dir), "built")
        }
        Err(why) => {
            // Silent for consumers; a warning only where a developer on the
            // pinned nightly would expect their kernel changes to be built.
            if root.join("gpu/src").is_dir() && rustc_is_nightly() {
                println!(
                    "cargo:warning=df11: embedding the committed PTX, not one built from gpu/src: {why}. \
                     Run `rustup toolchain install` in the repository to build it."
                );
            }
            (df11_gpu::PTX.to_owned(), "committed")
        }
    };
    for name in df11_gpu::KERNEL_NAMES {
        if !ptx.contains(&format!(".entry {name}(")) {
            fail(&format!("the {origin} PTX module lacks the kernel entry point `{name}`"));
        }
    }
    fs::write(out_dir.join("df11_kernels.ptx"), ptx).expect("write PTX into OUT_DIR");
    println!("cargo:rustc-env=DF11_PTX_ORIGIN={origin}");
}

fn fail(msg: &str) -> ! {
    panic!("\n\ndf11 build.rs: {msg}\n\n");
}

fn rustc() -> OsString {
    env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"))
}

fn rustc_is_nightly() -> bool {
    Command::new(rustc()).arg("-vV").output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("release:") && l.contains("nightly"))
    })
}

/// The `llvm-tools` binaries the link step runs.
struct Pipeline {
    link: PathBuf,
    opt: PathBuf,
    llc: PathBuf,
    ar: PathBuf,
}

impl Pipeline {
    /// The tools, or why the PTX cannot be built here.
    fn detect(root: &Path) -> Result<Self, String> {
        if !root.join("gpu/src/lib.rs").is_file() {
            return Err("the gpu/ sources are not here".into());
        }
        if !rustc_is_nightly() {
            return Err("rustc is not a nightly".into());
        }
        let out = Command::new(rustc())
            .args(["--print", "sysroot"])
            .output()
            .map_err(|e| format!("cannot run rustc to find its sysroot: {e}"))?;
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let rustlib = sysroot.join("lib/rustlib");
        if !rustlib.join("src/rust/library/core/Cargo.toml").is_file() {
            return Err("the `rust-src` component is missing".into());
        }
        let bin = rustlib.join(env::var("HOST").expect("cargo sets HOST")).join("bin");
        let tool = |name: &str| {
            let p = bin.join(format!("{name}{}", env::consts::EXE_SUFFIX));
            if p.is_file() { Ok(p) } else { Err("the `llvm-tools` component is missing".to_string()) }
        };
        Ok(Pipeline { link: tool("llvm-link")?, opt: tool("opt")?, llc: tool("llc")?, ar: tool("llvm-ar")? })
    }
}

/// Builds `df11-gpu` for nvptx and returns its rlibs: ours first, then `core`'s
/// and `compiler_builtins`'.
fn build_gpu_crate(root: &Path, out_dir: &Path) -> Vec<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--package", "df11-gpu", "--lib", "--target", NVPTX_TARGET])
        .args(["-Zbuild-std=core", "--message-format=json-render-diagnostics"])
        .arg("--target-dir")
        .arg(out_dir.join("nvptx"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // The outer build's flags are for the host; the kernel gets its own.
    for var in
        ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"]
    {
        cmd.env_remove(var);
    }
    // `immediate-abort`: a panic is a trap in place, so no panic function of
    // `core` (whose symbol names hash the sysroot's path) and no panic
    // location (a path) reach the PTX.
    let flags = [format!("-Ctarget-cpu={PTX_SM}"), "-Zunstable-options".into(), "-Cpanic=immediate-abort".into()];
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3");
    let out = cmd.output().unwrap_or_else(|e| fail(&format!("cannot run cargo for the nvptx build: {e}")));
    if !out.status.success() {
        fail("building gpu/ for nvptx64-nvidia-cuda failed (see the errors above)");
    }
    let mut ours = Vec::new();
    let mut deps = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_ours = msg["target"]["name"] == "df11_gpu";
        let files = msg["filenames"].as_array().into_iter().flatten().filter_map(Value::as_str);
        for rlib in files.filter(|f| f.ends_with(".rlib")).map(PathBuf::from) {
            if is_ours { ours.push(rlib) } else { deps.push(rlib) }
        }
    }
    if ours.len() != 1 {
        fail("the nvptx build did not report exactly one df11_gpu rlib");
    }
    ours.extend(deps);
    ours
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("cannot run {what}: {e}")));
    if !status.success() {
        fail(&format!("{what} failed ({status})"));
    }
}

/// Bitcode members of an rlib, extracted into `dir`.
fn extract_bitcode(tools: &Pipeline, rlib: &Path, dir: &Path) -> Vec<PathBuf> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).expect("create bitcode dir");
    run(Command::new(&tools.ar).current_dir(dir).arg("x").arg(rlib), "llvm-ar");
    let mut objs: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read bitcode dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    objs.sort();
    objs
}

fn link_to_ptx(tools: &Pipeline, rlibs: &[PathBuf], out_dir: &Path) -> String {
    let work = out_dir.join("ptx-link");
    fs::create_dir_all(&work).expect("create link dir");
    let mut per_lib = Vec::new();
    for (i, rlib) in rlibs.iter().enumerate() {
        per_lib.push(extract_bitcode(tools, rlib, &work.join(format!("lib{i}"))));
    }
    // Our crate is linked whole; the libraries contribute only what it uses.
    let ours_bc = work.join("ours.bc");
    run(Command::new(&tools.link).args(&per_lib[0]).arg("-o").arg(&ours_bc), "llvm-link (df11-gpu)");
    let linked = work.join("linked.bc");
    let mut link = Command::new(&tools.link);
    link.arg(&ours_bc).arg("--only-needed");
    for objs in &per_lib[1..] {
        link.args(objs);
    }
    run(link.arg("-o").arg(&linked), "llvm-link (core)");
    let optimized = work.join("optimized.bc");
    run(
        Command::new(&tools.opt)
            .args(["-passes=internalize,default<O3>", "--discard-value-names"])
            .arg(format!("-internalize-public-api-list={}", df11_gpu::KERNEL_NAMES.join(",")))
            .arg(&linked)
            .arg("-o")
            .arg(&optimized),
        "opt",
    );
    let ptx = work.join("kernels.ptx");
    run(
        Command::new(&tools.llc)
            .args([
                "-O3",
                "--discard-value-names",
                &format!("-mtriple={NVPTX_TARGET}"),
                &format!("-mcpu={PTX_SM}"),
                &format!("-mattr={PTX_ISA}"),
            ])
            .arg(&optimized)
            .arg("-o")
            .arg(&ptx),
        "llc",
    );
    fs::read_to_string(&ptx).expect("read PTX")
}

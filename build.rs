//! Builds the `gpu/` crate into the PTX module that the `df11` crate embeds.
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
    println!("cargo:rerun-if-changed=gpu/src");
    println!("cargo:rerun-if-changed=gpu/Cargo.toml");
    println!("cargo:rerun-if-changed=build.rs");

    let tools = LlvmTools::find();
    let rlibs = build_gpu_crate(&root, &out_dir);
    let ptx = link_to_ptx(&tools, &rlibs, &out_dir);
    for name in df11_gpu::KERNEL_NAMES {
        if !ptx.contains(&format!(".entry {name}(")) {
            fail(&format!("the PTX module lacks the kernel entry point `{name}`"));
        }
    }
    fs::write(out_dir.join("df11_kernels.ptx"), ptx).expect("write PTX into OUT_DIR");
}

fn fail(msg: &str) -> ! {
    panic!("\n\ndf11 build.rs: {msg}\n\n");
}

struct LlvmTools {
    link: PathBuf,
    opt: PathBuf,
    llc: PathBuf,
    ar: PathBuf,
}

impl LlvmTools {
    fn find() -> Self {
        let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
        let out = Command::new(&rustc)
            .args(["--print", "sysroot"])
            .output()
            .unwrap_or_else(|e| fail(&format!("cannot run rustc to find its sysroot: {e}")));
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let host = env::var("HOST").expect("cargo sets HOST");
        let bin = sysroot.join("lib/rustlib").join(host).join("bin");
        let tool = |name: &str| {
            let p = bin.join(format!("{name}{}", env::consts::EXE_SUFFIX));
            if !p.exists() {
                fail(&format!(
                    "`{}` is missing. The GPU kernel is linked with the `llvm-tools` rustup component; \
                     run `rustup toolchain install` in the repository (rust-toolchain.toml lists it) \
                     or `rustup component add llvm-tools`.",
                    p.display()
                ));
            }
            p
        };
        LlvmTools { link: tool("llvm-link"), opt: tool("opt"), llc: tool("llc"), ar: tool("llvm-ar") }
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
    cmd.env("CARGO_ENCODED_RUSTFLAGS", format!("-Ctarget-cpu={PTX_SM}"))
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3");
    let out = cmd.output().unwrap_or_else(|e| fail(&format!("cannot run cargo for the nvptx build: {e}")));
    if !out.status.success() {
        fail(
            "building gpu/ for nvptx64-nvidia-cuda failed (see the errors above). It needs the pinned \
             nightly with the `rust-src` component: run `rustup toolchain install` in the repository.",
        );
    }
    let mut ours = Vec::new();
    let mut deps = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        for path in json_filenames(line).into_iter().filter(|p| p.ends_with(".rlib")) {
            if line.contains("\"name\":\"df11_gpu\"") {
                ours.push(PathBuf::from(path));
            } else {
                deps.push(PathBuf::from(path));
            }
        }
    }
    if ours.len() != 1 {
        fail("the nvptx build did not report exactly one df11_gpu rlib");
    }
    ours.extend(deps);
    ours
}

/// The `"filenames":[...]` entries of one cargo JSON message. The paths are
/// ones cargo wrote under our target directory; only `\\` and `\"` need undoing.
fn json_filenames(line: &str) -> Vec<String> {
    let Some(start) = line.find("\"filenames\":[") else { return Vec::new() };
    let rest = &line[start + "\"filenames\":[".len()..];
    let end = rest.find(']').unwrap_or(rest.len());
    rest[..end]
        .split("\",\"")
        .map(|s| s.trim_matches('"').replace("\\\\", "\\").replace("\\\"", "\""))
        .filter(|s| !s.is_empty())
        .collect()
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("cannot run {what}: {e}")));
    if !status.success() {
        fail(&format!("{what} failed ({status})"));
    }
}

/// Bitcode members of an rlib, extracted into `dir`.
fn extract_bitcode(tools: &LlvmTools, rlib: &Path, dir: &Path) -> Vec<PathBuf> {
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

fn link_to_ptx(tools: &LlvmTools, rlibs: &[PathBuf], out_dir: &Path) -> String {
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
            .arg("-passes=internalize,default<O3>")
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

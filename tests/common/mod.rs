//! Helpers shared by the CLI integration tests: running the binary and
//! reading/writing safetensors files without going through df11's own code.

#![allow(dead_code)]

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// A tensor as the tests see it.
#[derive(Clone, Debug, PartialEq)]
pub struct T {
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

pub fn t(dtype: &str, shape: &[u64], data: Vec<u8>) -> T {
    T { dtype: dtype.into(), shape: shape.to_vec(), data }
}

/// Writes a safetensors file (tensors in the map's order, no alignment padding).
pub fn write_st(path: &Path, tensors: &BTreeMap<String, T>, metadata: Option<&BTreeMap<String, String>>) {
    write_st_in_order(path, tensors.iter().map(|(n, t)| (n.as_str(), t)), metadata);
}

/// [`write_st`] with the tensors' data in the order given (the header's
/// JSON keys still sorted).
pub fn write_st_in_order<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a T)>,
    metadata: Option<&BTreeMap<String, String>>,
) {
    let mut header = Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), json!(m));
    }
    let mut data = Vec::new();
    for (name, t) in tensors {
        let start = data.len();
        data.extend_from_slice(&t.data);
        header.insert(name.into(), json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [start, data.len()]}));
    }
    let h = serde_json::to_vec(&Value::Object(header)).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

/// Writes `tensors` as the safetensors library does (compact JSON,
/// `__metadata__` first, tensors in data order with their keys in the order
/// dtype, shape, data_offsets, the header padded with spaces to a multiple
/// of 8), or with the metadata last, as another writer might. Returns the
/// header's length without its padding.
pub fn library_style_file(path: &Path, tensors: &[(&str, T)], metadata_last: bool) -> usize {
    let meta = r#""__metadata__":{"format":"pt"}"#.to_string();
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for (name, t) in tensors {
        let start = data.len();
        data.extend_from_slice(&t.data);
        let (name, shape) = (serde_json::json!(name), serde_json::json!(t.shape));
        entries.push(format!(
            r#"{name}:{{"dtype":"{}","shape":{shape},"data_offsets":[{start},{}]}}"#,
            t.dtype,
            data.len()
        ));
    }
    if metadata_last {
        entries.push(meta);
    } else {
        entries.insert(0, meta);
    }
    let mut header = format!("{{{}}}", entries.join(","));
    let compact = header.len();
    header.extend(std::iter::repeat_n(' ', header.len().next_multiple_of(8) - header.len()));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    std::fs::write(path, out).unwrap();
    compact
}

/// Reads a safetensors file: tensors by name, and `__metadata__`.
pub fn read_st(path: &Path) -> (BTreeMap<String, T>, Option<BTreeMap<String, String>>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut tensors = BTreeMap::new();
    let mut meta = None;
    let mut covered = 0;
    for (k, v) in header {
        if k == "__metadata__" {
            meta = Some(serde_json::from_value(v).unwrap());
            continue;
        }
        let offs: Vec<usize> = serde_json::from_value(v["data_offsets"].clone()).unwrap();
        covered += offs[1] - offs[0];
        tensors.insert(
            k,
            T {
                dtype: v["dtype"].as_str().unwrap().into(),
                shape: serde_json::from_value(v["shape"].clone()).unwrap(),
                data: data[offs[0]..offs[1]].to_vec(),
            },
        );
    }
    assert_eq!(covered, data.len(), "{}: data section not exactly covered", path.display());
    (tensors, meta)
}

/// Deterministic weight-like BF16 data: roughly normal values of scale ~2^-6,
/// with a few special values (zeros, subnormals, inf, NaN).
pub fn bf16_data(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let bits: u16 = match i % 997 {
            13 => 0x0000,
            14 => 0x8000,
            15 => 0x0001,
            16 => 0x7F80,
            17 => 0x7FC1,
            _ => {
                let g = (0..4).map(|_| next() as f32 / u32::MAX as f32).sum::<f32>() - 2.0;
                let x = g * 0.02;
                (x.to_bits() >> 16) as u16
            }
        };
        out.extend(bits.to_le_bytes());
    }
    out
}

pub fn df11() -> Command {
    Command::new(env!("CARGO_BIN_EXE_df11"))
}

/// Runs df11 with `args`; returns the output (never panics on failure).
pub fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = df11();
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

/// Runs df11 and asserts success.
pub fn ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let o = run(args);
    assert!(o.status.success(), "df11 failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// Runs df11 and asserts a clean failure: exit 1, a one-line `df11: error:` message, no panic.
pub fn fails(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "expected exit 1, got {:?}: {err}", o.status);
    assert!(!err.contains("panicked"), "panic: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("df11: error: "), "no error line: {err}");
    last.to_string()
}

/// The DFloat11 fixtures in `tests/fixtures/dfloat11/` (see its FORMAT.md):
/// each case is one module's six arrays written by DFloat11's own encoder,
/// its bf16 original and a JSON description.
pub const DFLOAT11_CASES: [&str; 7] = [
    "gaussian_small",
    "realistic_multi",
    "deep_code",
    "odd_length",
    "deep_code_cap",
    "edge_last_code_crosses_block_aligned",
    "edge_last_code_crosses_block_padded",
];

/// The DFloat11 fixtures' folder.
pub fn dfloat11_fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dfloat11")
}

/// A fixture case's JSON description.
pub fn dfloat11_case_json(case: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dfloat11_fixtures().join(format!("{case}.json"))).unwrap()).unwrap()
}

/// A fixture file's bytes, un-gzipping a `.gz` one where the plain file is absent.
pub fn dfloat11_fixture_bytes(name: &str) -> Vec<u8> {
    let plain = dfloat11_fixtures().join(name);
    if plain.exists() {
        return std::fs::read(plain).unwrap();
    }
    gunzip(&std::fs::read(dfloat11_fixtures().join(format!("{name}.gz"))).unwrap())
}

/// A minimal gzip reader (RFC 1952 header, then raw DEFLATE).
pub fn gunzip(gz: &[u8]) -> Vec<u8> {
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8], "not gzip");
    let flags = gz[3];
    let mut i = 10;
    if flags & 4 != 0 {
        i += 2 + u16::from_le_bytes([gz[i], gz[i + 1]]) as usize;
    }
    for bit in [8, 16] {
        if flags & bit != 0 {
            i += gz[i..].iter().position(|&b| b == 0).unwrap() + 1;
        }
    }
    if flags & 2 != 0 {
        i += 2;
    }
    let out = miniz_oxide::inflate::decompress_to_vec(&gz[i..gz.len() - 8]).unwrap();
    let size = u32::from_le_bytes(gz[gz.len() - 4..].try_into().unwrap());
    assert_eq!(out.len() as u32, size);
    out
}

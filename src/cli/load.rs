//! Opening any checkpoint df11 understands (plain safetensors, df11-compressed,
//! DFloat11) as a list of work items, each yielding plain tensors when
//! materialized. Every command is written against this one view.

use crate::checkpoint::Input;
use crate::checkpoint::safetensors::{SafetensorsFile, TensorInfo, check_size};
use crate::codec::{self, Decoder};
use crate::error::{IoContext, Result, bail, err};
use df11::dfloat11::config::{Dfloat11Config, Shapes};
use df11::dfloat11::{ARRAY_NAMES, ModuleArrays, decode_module};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// The `__metadata__` key under which df11 records what it compressed.
pub const META_KEY: &str = "df11";
/// Version of the embedding described in docs/FORMAT.md section 11.
pub const CHECKPOINT_VERSION: u32 = 1;

/// The value of `__metadata__["df11"]` (a JSON string, since safetensors
/// metadata values are strings).
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Df11Meta {
    /// [`CHECKPOINT_VERSION`].
    pub format_version: u32,
    /// Compressed tensors: name → original dtype and shape.
    pub tensors: BTreeMap<String, OrigTensor>,
}

/// The original dtype and shape of a compressed tensor.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct OrigTensor {
    /// Always `BF16` in version 1.
    pub dtype: String,
    /// The original shape.
    pub shape: Vec<u64>,
}

/// What kind of checkpoint was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Plain safetensors.
    Plain,
    /// Written by `df11 compress`.
    Df11,
    /// Written by the DFloat11 reference implementation.
    Dfloat11,
}

/// A plain tensor an item produces.
#[derive(Clone, Debug)]
pub struct OutTensor {
    /// Tensor name.
    pub name: String,
    /// Safetensors dtype.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
}

/// How an item's bytes are stored.
pub enum Payload {
    /// Stored as is.
    Raw(TensorInfo),
    /// A df11 container in a U8 tensor.
    Df11(TensorInfo),
    /// The six arrays of a DFloat11 module.
    Dfloat11(Box<[TensorInfo; 6]>),
}

/// A unit of work: one stored tensor (or DFloat11 module) and what it yields.
pub struct Item {
    /// The plain tensors it decodes to, in order.
    pub outputs: Vec<OutTensor>,
    /// Where the bytes are.
    pub payload: Payload,
}

impl Item {
    /// Bytes this item occupies in the file.
    pub fn stored_bytes(&self) -> u64 {
        match &self.payload {
            Payload::Raw(t) | Payload::Df11(t) => t.len(),
            Payload::Dfloat11(a) => a.iter().map(TensorInfo::len).sum(),
        }
    }

    /// Bytes of the plain tensors it yields.
    pub fn plain_bytes(&self) -> u64 {
        self.outputs.iter().map(|o| o.shape.iter().product::<u64>() * dtype_bytes(&o.dtype)).sum()
    }
}

fn dtype_bytes(dtype: &str) -> u64 {
    crate::checkpoint::safetensors::dtype_size(dtype).unwrap_or(1)
}

/// One opened safetensors file of a checkpoint.
pub struct LoadedFile {
    /// The mapped file.
    pub file: SafetensorsFile,
    /// Name relative to the checkpoint directory (empty for a single file).
    pub rel: String,
    /// Work items, in file order.
    pub items: Vec<Item>,
    /// The file's `__metadata__` without df11's key.
    pub user_metadata: Option<BTreeMap<String, String>>,
}

/// An opened checkpoint.
pub struct Loaded {
    /// What it is.
    pub kind: Kind,
    /// File or directory.
    pub input: Input,
    /// Its safetensors files.
    pub files: Vec<LoadedFile>,
    /// config.json, for DFloat11 checkpoints.
    pub config: Option<Value>,
}

impl Loaded {
    /// Opens `path`. `shapes_file` gives DFloat11 weight shapes; `warn` prints warnings.
    pub fn open(path: &Path, shapes_file: Option<&Path>, warn: &dyn Fn(&str)) -> Result<Loaded> {
        let input = Input::open(path)?;
        let config = match &input {
            Input::Dir(d) => {
                let p = d.root.join("config.json");
                match std::fs::read(&p) {
                    Ok(b) => Some(
                        serde_json::from_slice::<Value>(&b)
                            .map_err(|e| err!("{}: not valid JSON: {e}", p.display()))?,
                    ),
                    Err(_) => None,
                }
            }
            Input::File(_) => None,
        };
        let cfg_path = path.join("config.json");
        let dfloat11 = match &config {
            Some(c) => Dfloat11Config::from_config_json(c).map_err(|e| err!("{}: {e}", cfg_path.display()))?,
            None => None,
        };
        let mut files = Vec::new();
        let mut kind = Kind::Plain;
        if let Some(d) = &dfloat11 {
            let shapes_json = match shapes_file {
                Some(p) => Some(
                    serde_json::from_slice::<Value>(&std::fs::read(p).ctx("cannot read", p)?)
                        .map_err(|e| err!("{}: not valid JSON: {e}", p.display()))?,
                ),
                None => None,
            };
            let shapes = Shapes::new(shapes_json.as_ref(), config.as_ref().unwrap())
                .map_err(|e| err!("{}: {e}", shapes_file.unwrap_or(&cfg_path).display()))?;
            kind = Kind::Dfloat11;
            for (p, rel) in input.files() {
                let file = SafetensorsFile::open(&p)?;
                let items = dfloat11_items(&file, d, &shapes, warn)?;
                let user_metadata = file.metadata.clone();
                files.push(LoadedFile { file, rel, items, user_metadata });
            }
        } else {
            if shapes_file.is_some() {
                bail!(
                    "{}: --shapes only applies to DFloat11 checkpoints (config.json with dfloat11_config)",
                    path.display()
                );
            }
            for (p, rel) in input.files() {
                let file = SafetensorsFile::open(&p)?;
                let (items, user_metadata, is_df11) = df11_items(&file)?;
                if is_df11 {
                    kind = Kind::Df11;
                }
                files.push(LoadedFile { file, rel, items, user_metadata });
            }
        }
        Ok(Loaded { kind, input, files, config })
    }

    /// All items with their file, in order.
    pub fn items(&self) -> impl Iterator<Item = (&LoadedFile, &Item)> {
        self.files.iter().flat_map(|f| f.items.iter().map(move |i| (f, i)))
    }
}

/// A file's items, its metadata without df11's key, and whether df11 wrote it.
type Df11Items = (Vec<Item>, Option<BTreeMap<String, String>>, bool);

fn df11_items(file: &SafetensorsFile) -> Result<Df11Items> {
    let path = file.path.display();
    let mut user = file.metadata.clone();
    let meta: Option<Df11Meta> = match user.as_mut().and_then(|m| m.remove(META_KEY)) {
        Some(s) => Some(
            serde_json::from_str(&s)
                .map_err(|e| err!("{path}: __metadata__.{META_KEY} is not valid df11 metadata: {e}"))?,
        ),
        None => None,
    };
    if let Some(m) = &meta
        && m.format_version != CHECKPOINT_VERSION
    {
        bail!(
            "{path}: df11 checkpoint format version {} is not supported (this df11 reads {CHECKPOINT_VERSION})",
            m.format_version
        );
    }
    let compressed = meta.as_ref().map(|m| &m.tensors);
    let mut items = Vec::new();
    for t in &file.tensors {
        match compressed.and_then(|c| c.get(&t.name)) {
            Some(orig) => {
                if t.dtype != "U8" || t.shape.len() != 1 {
                    bail!(
                        "{path}: tensor {}: df11 metadata says compressed, but it is {} {:?}, not a U8 vector",
                        t.name,
                        t.dtype,
                        t.shape
                    );
                }
                if orig.dtype != "BF16" {
                    bail!(
                        "{path}: tensor {}: df11 version 1 only compresses BF16, metadata says {}",
                        t.name,
                        orig.dtype
                    );
                }
                // The shape comes from metadata and sizes the decode buffer:
                // bound it before anything is allocated for it. A container
                // holds one sign+mantissa byte per element, so its length
                // bounds the element count.
                let numel = orig.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
                if numel.is_none_or(|n| n > t.len()) {
                    bail!(
                        "{path}: tensor {}: df11 metadata shape {:?} has more elements than its {}-byte container can hold",
                        t.name,
                        orig.shape,
                        t.len()
                    );
                }
                let out = OutTensor { name: t.name.clone(), dtype: orig.dtype.clone(), shape: orig.shape.clone() };
                items.push(Item { outputs: vec![out], payload: Payload::Df11(t.clone()) });
            }
            None => {
                let out = OutTensor { name: t.name.clone(), dtype: t.dtype.clone(), shape: t.shape.clone() };
                items.push(Item { outputs: vec![out], payload: Payload::Raw(t.clone()) });
            }
        }
    }
    if let Some(c) = compressed {
        for name in c.keys() {
            if file.get(name).is_none() {
                bail!("{path}: df11 metadata lists tensor {name}, which the file does not hold");
            }
        }
    }
    if let Some(u) = &user
        && u.is_empty()
    {
        user = None;
    }
    Ok((items, user, meta.is_some()))
}

fn dfloat11_items(
    file: &SafetensorsFile,
    cfg: &Dfloat11Config,
    shapes: &Shapes,
    warn: &dyn Fn(&str),
) -> Result<Vec<Item>> {
    let path = file.path.display();
    let mut items = Vec::new();
    let modules: std::collections::HashSet<&str> =
        file.tensors.iter().filter_map(|t| t.name.strip_suffix(".luts")).collect();
    let in_module = |name: &str| {
        ARRAY_NAMES
            .iter()
            .any(|a| name.strip_suffix(a).and_then(|m| m.strip_suffix('.')).is_some_and(|m| modules.contains(m)))
    };
    for t in &file.tensors {
        let Some(module) = t.name.strip_suffix(".luts") else {
            if in_module(&t.name) {
                // Part of a module; handled with its `.luts`.
                continue;
            }
            let out = OutTensor { name: t.name.clone(), dtype: t.dtype.clone(), shape: t.shape.clone() };
            items.push(Item { outputs: vec![out], payload: Payload::Raw(t.clone()) });
            continue;
        };
        let arrays: Vec<TensorInfo> = ARRAY_NAMES
            .iter()
            .map(|a| {
                let name = format!("{module}.{a}");
                file.get(&name).cloned().ok_or_else(|| err!("{path}: DFloat11 module {module} has no {name}"))
            })
            .collect::<Result<_>>()?;
        for (a, want) in arrays.iter().zip(["U8", "U8", "U8", "U8", "U8", "I64"]) {
            if a.dtype != want {
                bail!("{path}: tensor {}: expected dtype {want}, found {}", a.name, a.dtype);
            }
        }
        let n = arrays[2].len();
        let split = file.bytes(&arrays[5]);
        let mut bounds = vec![0u64];
        for c in split.chunks_exact(8) {
            let v = i64::from_le_bytes(c.try_into().unwrap());
            if v < *bounds.last().unwrap() as i64 || v as u64 > n {
                bail!(
                    "{path}: DFloat11 module {module}: split_positions entry {v} is out of order or beyond {n} elements"
                );
            }
            bounds.push(v as u64);
        }
        bounds.push(n);
        let names = cfg.weight_names(module, bounds.len() - 1).map_err(|e| err!("{path}: {e}"))?;
        let mut outputs = Vec::new();
        for (name, w) in names.into_iter().zip(bounds.windows(2)) {
            let numel = w[1] - w[0];
            let shape = match shapes.shape(&name, numel).map_err(|e| err!("{path}: {e}"))? {
                Some(s) => s,
                None => {
                    warn(&format!(
                        "warning: {path}: no shape known for {name}; writing it as a vector of {numel} (pass --shapes)"
                    ));
                    vec![numel]
                }
            };
            outputs.push(OutTensor { name, dtype: "BF16".into(), shape });
        }
        let arrays: [TensorInfo; 6] = arrays.try_into().unwrap();
        items.push(Item { outputs, payload: Payload::Dfloat11(Box::new(arrays)) });
    }
    Ok(items)
}

/// Produces an item's plain tensors' bytes (borrowed for raw tensors).
pub fn materialize<'a>(f: &'a LoadedFile, item: &Item, dec: &dyn Decoder) -> Result<Vec<Cow<'a, [u8]>>> {
    let path = f.file.path.display();
    let out: Vec<Cow<'a, [u8]>> = match &item.payload {
        Payload::Raw(t) => vec![Cow::Borrowed(f.file.bytes(t))],
        Payload::Df11(t) => {
            let o = &item.outputs[0];
            let numel = o.shape.iter().product::<u64>();
            let mut bits = vec![0u16; numel as usize];
            dec.decode(f.file.bytes(t), &mut bits).map_err(|e| err!("{path}: tensor {}: {e}", t.name))?;
            vec![Cow::Owned(codec::u16_to_bytes(&bits).into_owned())]
        }
        Payload::Dfloat11(a) => {
            let arrays = ModuleArrays {
                luts: f.file.bytes(&a[0]),
                encoded_exponent: f.file.bytes(&a[1]),
                sign_mantissa: f.file.bytes(&a[2]),
                output_positions: f.file.bytes(&a[3]),
                gaps: f.file.bytes(&a[4]),
                split_positions: f.file.bytes(&a[5]),
            };
            let module = a[0].name.strip_suffix(".luts").unwrap_or(&a[0].name);
            let d = decode_module(&arrays).map_err(|e| err!("{path}: DFloat11 module {module}: {e}"))?;
            d.pieces.iter().map(|r| Cow::Owned(codec::u16_to_bytes(&d.bits[r.clone()]).into_owned())).collect()
        }
    };
    for (o, b) in item.outputs.iter().zip(&out) {
        check_size(&o.name, &o.dtype, &o.shape, b.len()).map_err(|e| err!("{path}: {e}"))?;
    }
    Ok(out)
}

/// Splits items into batches that are processed in parallel and then written
/// in order: at most `threads` items and about `budget` plain bytes per batch
/// (always at least one item), which bounds memory to a few tensors.
pub fn batches<T>(items: &[T], threads: usize, budget: u64, size: impl Fn(&T) -> u64) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let mut end = start + 1;
        let mut bytes = size(&items[start]);
        while end < items.len() && end - start < threads && bytes + size(&items[end]) <= budget {
            bytes += size(&items[end]);
            end += 1;
        }
        out.push(&items[start..end]);
        start = end;
    }
    out
}

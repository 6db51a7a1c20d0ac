//! Where weights come from: [`WeightSource`], and its implementation for a
//! checkpoint of safetensors files, plain or written by `df11 compress`
//! (docs/FORMAT.md section 11).
//!
//! The trait is deliberately small (a list of tensors, and each tensor's
//! stored form) so that other readers of checkpoints can implement it.

use super::{Error, Result};
use crate::CompressedTensor;
use candle_core::DType;
use memmap2::Mmap;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The `__metadata__` key under which `df11 compress` records what it compressed.
const META_KEY: &str = "df11";
/// The version of docs/FORMAT.md section 11 this reader understands.
const CHECKPOINT_VERSION: u32 = 1;

/// A tensor as the model sees it: name, element type and shape after decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    /// Name, e.g. `model.layers.0.mlp.up_proj.weight`.
    pub name: String,
    /// Element type after decoding.
    pub dtype: DType,
    /// Shape after decoding.
    pub shape: Vec<usize>,
}

impl TensorMeta {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of the decoded tensor.
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.size_in_bytes()
    }
}

/// How a tensor is stored.
pub enum Stored<'a> {
    /// Little-endian elements, as in a safetensors file.
    Raw(&'a [u8]),
    /// A df11-compressed bf16 tensor (its element count matches the shape).
    Df11(Box<CompressedTensor>),
}

/// A set of named tensors, each either stored as is or df11-compressed.
pub trait WeightSource {
    /// Every tensor, in storage order.
    fn tensors(&self) -> &[TensorMeta];
    /// The stored form of tensor `name`.
    fn stored(&self, name: &str) -> Result<Stored<'_>>;
}

/// One tensor's place in a [`SafetensorsSource`].
struct Entry {
    file: usize,
    /// Byte range in the mapped file.
    range: std::ops::Range<usize>,
    compressed: bool,
    /// Index in `metas`.
    meta: usize,
}

/// A checkpoint of safetensors files: a single `.safetensors` file or a
/// directory of them (shards included). Files written by `df11 compress`
/// (with `__metadata__["df11"]`) hand out their BF16 tensors as
/// [`Stored::Df11`]; every other tensor is [`Stored::Raw`].
pub struct SafetensorsSource {
    maps: Vec<Mmap>,
    metas: Vec<TensorMeta>,
    entries: HashMap<String, Entry>,
    compressed: bool,
}

#[derive(Deserialize)]
struct Df11Meta {
    format_version: u32,
    tensors: BTreeMap<String, OrigTensor>,
}

#[derive(Deserialize)]
struct OrigTensor {
    dtype: String,
    shape: Vec<usize>,
}

fn dtype_of(d: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match d {
        S::BF16 => DType::BF16,
        S::F16 => DType::F16,
        S::F32 => DType::F32,
        S::F64 => DType::F64,
        S::U8 => DType::U8,
        S::U32 => DType::U32,
        S::I64 => DType::I64,
        _ => return None,
    })
}

impl SafetensorsSource {
    /// Opens a `.safetensors` file, or every `*.safetensors` file of a directory.
    pub fn open(path: &Path) -> Result<Self> {
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            v.sort();
            if v.is_empty() {
                return Err(Error::Format(format!("{}: no .safetensors file", path.display())));
            }
            v
        } else {
            vec![path.to_path_buf()]
        };
        let mut src = SafetensorsSource { maps: vec![], metas: vec![], entries: HashMap::new(), compressed: false };
        for p in files {
            src.add_file(&p)?;
        }
        Ok(src)
    }

    /// Whether any file was written by `df11 compress`.
    pub fn is_df11(&self) -> bool {
        self.compressed
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let bad = |m: String| Error::Format(format!("{}: {m}", path.display()));
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is only read. Like every reader of memory-mapped
        // checkpoints, this assumes that nobody truncates or rewrites the file
        // while it is open; a truncation would raise SIGBUS, not read garbage.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| bad(e.to_string()))?;
        let data_start = 8 + header;
        let df11: Option<Df11Meta> = match meta.metadata().as_ref().and_then(|m| m.get(META_KEY)) {
            Some(s) => Some(
                serde_json::from_str(s)
                    .map_err(|e| bad(format!("__metadata__.{META_KEY} is not df11 metadata: {e}")))?,
            ),
            None => None,
        };
        if let Some(m) = &df11 {
            if m.format_version != CHECKPOINT_VERSION {
                return Err(bad(format!("df11 checkpoint format version {} is not supported", m.format_version)));
            }
            self.compressed = true;
        }
        let mut infos: Vec<(String, &safetensors::tensor::TensorInfo)> = meta.tensors().into_iter().collect();
        infos.sort_by_key(|(_, i)| i.data_offsets);
        let file_index = self.maps.len();
        for (name, info) in infos {
            let (a, b) = info.data_offsets;
            let range = data_start.checked_add(a).zip(data_start.checked_add(b)).map(|(a, b)| a..b);
            let range = range
                .filter(|r| r.start <= r.end && r.end <= map.len())
                .ok_or_else(|| bad(format!("tensor {name}: data offsets outside the file")))?;
            let orig = df11.as_ref().and_then(|m| m.tensors.get(&name));
            let (dtype, shape) = match orig {
                Some(o) => {
                    if info.dtype != safetensors::Dtype::U8 || info.shape.len() != 1 {
                        return Err(bad(format!(
                            "tensor {name}: df11 metadata says compressed, but it is not a U8 vector"
                        )));
                    }
                    if o.dtype != "BF16" {
                        return Err(bad(format!(
                            "tensor {name}: df11 compresses BF16 only, metadata says {}",
                            o.dtype
                        )));
                    }
                    (DType::BF16, o.shape.clone())
                }
                None => {
                    let d = dtype_of(info.dtype)
                        .ok_or_else(|| bad(format!("tensor {name}: dtype {:?} is not supported", info.dtype)))?;
                    (d, info.shape.clone())
                }
            };
            if self.entries.contains_key(&name) {
                return Err(bad(format!("tensor {name} is also in another file")));
            }
            let meta = TensorMeta { name: name.clone(), dtype, shape };
            if orig.is_none()
                && info.shape.iter().try_fold(meta.dtype.size_in_bytes(), |a, &d| a.checked_mul(d)) != Some(range.len())
            {
                return Err(bad(format!(
                    "tensor {name}: shape {:?} does not match its {} bytes",
                    meta.shape,
                    range.len()
                )));
            }
            self.entries
                .insert(name, Entry { file: file_index, range, compressed: orig.is_some(), meta: self.metas.len() });
            self.metas.push(meta);
        }
        if let Some(m) = &df11
            && let Some(missing) = m.tensors.keys().find(|n| !self.entries.contains_key(*n))
        {
            return Err(bad(format!("df11 metadata lists tensor {missing}, which the file does not hold")));
        }
        self.maps.push(map);
        Ok(())
    }
}

impl WeightSource for SafetensorsSource {
    fn tensors(&self) -> &[TensorMeta] {
        &self.metas
    }

    fn stored(&self, name: &str) -> Result<Stored<'_>> {
        let e = self.entries.get(name).ok_or_else(|| Error::Format(format!("no tensor {name}")))?;
        let bytes = &self.maps[e.file][e.range.clone()];
        if !e.compressed {
            return Ok(Stored::Raw(bytes));
        }
        let t = CompressedTensor::from_bytes(bytes).map_err(|e| Error::Format(format!("tensor {name}: {e}")))?;
        let meta = &self.metas[e.meta];
        if t.num_elements != meta.numel() as u64 {
            return Err(Error::Format(format!(
                "tensor {name}: the container holds {} elements, shape {:?} needs {}",
                t.num_elements,
                meta.shape,
                meta.numel()
            )));
        }
        Ok(Stored::Df11(Box::new(t)))
    }
}

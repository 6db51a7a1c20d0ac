//! Checkpoints on disk: reading df11, plain safetensors and DFloat11
//! checkpoints, decoding their tensors, grouping them by transformer block,
//! and writing df11 checkpoints.
//!
//! # What a checkpoint is
//!
//! A checkpoint is one `.safetensors` file or a directory of them (sharded,
//! with a `*.safetensors.index.json`, plus config and tokenizer files that are
//! carried along). Three kinds are read ([`Kind`]):
//!
//! - **plain** safetensors: every tensor stored as is;
//! - **df11**, as written by [`write_file`] or `df11 compress`: each BF16
//!   tensor is a `U8` vector holding a df11 container, and the file's
//!   `__metadata__["df11"]` ([`META_KEY`]) records its original dtype and
//!   shape (docs/FORMAT.md section 11); a BF16 tensor that compression would
//!   not make smaller (by [`RAW_FALLBACK_MARGIN`] bytes) is stored as is and
//!   listed as such; other tensors are stored as is;
//! - **DFloat11**, written by the DFloat11 reference implementation: a
//!   directory whose `config.json` has `dfloat11_config`, each compressed
//!   module stored as six arrays. DFloat11 stores no shapes: they come from
//!   [`OpenOptions::shapes_file`], else from `config.json` for Llama-like
//!   models, else weights are vectors.
//!
//! # Design
//!
//! [`Checkpoint::open`] maps every file and validates its header with one
//! strict parser ([`safetensors`]), but reads no tensor data. Each file is cut
//! into [`Unit`]s, the pieces that decode independently: a stored tensor, or
//! a DFloat11 module (which decodes to several tensors at once). Everything
//! else is built on units: [`Checkpoint::tensors`] lists what they decode to,
//! [`Checkpoint::decode`] and [`Checkpoint::decode_group`] decode them on the
//! CPU (or with any [`Decoder`]), [`groups::BlockGroups`] gathers them by
//! transformer block, and [`Checkpoint::write_to`] rewrites a checkpoint one
//! batch of units at a time, in parallel, so memory stays at a few tensors.
//! The GPU side lives in [`gpu`].
//!
//! Outputs are atomic: a file or directory is built under a hidden temporary
//! name next to its destination, fsynced and renamed into place, so a failed
//! or killed run never leaves a partial file under the final name.
//!
//! Bad input is an [`Error`] naming the file and tensor, never a panic.
//!
//! # Example
//!
//! ```
//! use df11::checkpoint::{Checkpoint, OwnedTensor, Storage, write_file};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("model.safetensors");
//! // Two BF16 weights (compressed) and an F32 bias (stored as is).
//! let weights: Vec<u16> = (0..4096u32).map(|i| 0x3c00 + (i * 7919 % 512) as u16).collect();
//! let weight_bytes: Vec<u8> = weights.iter().flat_map(|w| w.to_le_bytes()).collect();
//! let tensors = vec![
//!     OwnedTensor::new("model.layers.0.mlp.up_proj.weight", "BF16", vec![64, 64], weight_bytes.clone()),
//!     OwnedTensor::new("model.layers.1.mlp.up_proj.weight", "BF16", vec![64, 64], weight_bytes.clone()),
//!     OwnedTensor::new("lm_head.bias", "F32", vec![2], vec![0; 8]),
//! ];
//! write_file(&path, &tensors, Some(df11::EncodeOptions::default()), None)?;
//!
//! let ckpt = Checkpoint::open(&path)?;
//! for t in ckpt.tensors() {
//!     println!("{} {} {:?} {:?} {} -> {} bytes", t.name, t.dtype, t.shape, t.storage, t.decoded_bytes, t.stored_bytes);
//! }
//! let up = ckpt.tensor("model.layers.0.mlp.up_proj.weight").unwrap();
//! assert!(matches!(up.storage, Storage::Df11 { .. }));
//! assert_eq!(ckpt.decode("model.layers.0.mlp.up_proj.weight")?, weight_bytes);
//!
//! // One group per block, plus the rest; one buffer fits any block.
//! let groups = ckpt.block_groups();
//! assert_eq!(groups.blocks.len(), 2);
//! let mut buf = vec![0u8; groups.max_block_bytes() as usize];
//! let block = &groups.blocks[1];
//! ckpt.decode_group_into(block, &mut buf[..block.bytes as usize])?;
//! assert_eq!(&buf[..block.bytes as usize], &weight_bytes[..]);
//! # Ok(())
//! # }
//! ```

mod decode;
pub mod error;
mod files;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod groups;
mod open;
pub mod output;
pub mod safetensors;
mod write;

pub(crate) use decode::bytes_to_u16;
pub use decode::container_version;
pub use decode::{BufferReuse, CpuDecoder, Decoder, recycle};
pub use error::{Error, Result};
pub use files::{DirInput, Input};
pub use groups::{Block, BlockGroups, GroupMember, TensorGroup, block_of};
pub use open::OpenOptions;
pub use write::{BATCH_BYTES, OwnedTensor, TensorSource, WriteOptions, WriteSummary, batches, write_file};

use crate::Layout;
use safetensors::{Metadata, SafetensorsFile, TensorInfo};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The `__metadata__` key under which df11 records what it compressed.
pub const META_KEY: &str = "df11";
/// Version of the embedding described in docs/FORMAT.md section 11.
pub const CHECKPOINT_VERSION: u32 = 1;
/// A BF16 tensor is stored as a df11 container only if the container is at
/// least this many bytes smaller than the tensor's raw bytes; otherwise it is
/// stored raw (bit for bit, listed in [`Df11Meta::raw`]). So no tensor is
/// ever stored larger than raw, and a few bytes saved never cost a decode.
/// Tiny tensors (biases, norms of a few hundred weights) are the ones that
/// fall back: a container's fixed part is about 190 bytes.
pub const RAW_FALLBACK_MARGIN: u64 = 16;

/// The value of `__metadata__["df11"]` (a JSON string, since safetensors
/// metadata values are strings).
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Df11Meta {
    /// [`CHECKPOINT_VERSION`].
    pub format_version: u32,
    /// Compressed tensors: name → original dtype and shape.
    pub tensors: BTreeMap<String, OrigTensor>,
    /// BF16 tensors stored raw because compressing them would not have saved
    /// [`RAW_FALLBACK_MARGIN`] bytes: name → dtype and shape, which must be
    /// the stored tensor's. Absent (empty) when there is none, so readers
    /// that predate it read such a tensor as an ordinary raw tensor.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, OrigTensor>,
    /// The original file's header length, where padding the header df11
    /// writes for the restored tensors with spaces to this length gives the
    /// original header byte for byte (docs/FORMAT.md §11.1): the restored
    /// file is then the original file. Absent otherwise, and in files
    /// written before it, whose readers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_len: Option<u64>,
}

/// The original dtype and shape of a compressed (or raw fallback) tensor.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
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
    /// Written by df11.
    Df11,
    /// Written by the DFloat11 reference implementation.
    Dfloat11,
}

impl Kind {
    /// `plain`, `df11` or `dfloat11`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Df11 => "df11",
            Kind::Dfloat11 => "dfloat11",
        }
    }
}

/// A decoded tensor's name, dtype and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    /// Tensor name.
    pub name: String,
    /// Safetensors dtype (`BF16`, `F32`, ...).
    pub dtype: String,
    /// Shape (empty for a scalar).
    pub shape: Vec<u64>,
}

impl TensorMeta {
    /// Number of elements (saturating at `u64::MAX` for an absurd shape,
    /// which no allocation can then satisfy).
    pub fn num_elements(&self) -> u64 {
        numel(&self.shape)
    }

    /// Bytes in decoded form (dtypes of no whole byte size count one byte
    /// per element; saturating like [`TensorMeta::num_elements`]).
    pub fn num_bytes(&self) -> u64 {
        self.num_elements().saturating_mul(safetensors::dtype_size(&self.dtype).unwrap_or(1))
    }
}

/// How a unit's bytes are stored.
#[derive(Clone, Debug)]
pub enum Payload {
    /// Stored as is.
    Raw(TensorInfo),
    /// A df11 container in a U8 tensor.
    Df11(TensorInfo),
    /// The six arrays of a DFloat11 module, in the order of
    /// [`crate::dfloat11::ARRAY_NAMES`].
    Dfloat11(Box<[TensorInfo; 6]>),
}

/// A piece of a file that decodes on its own: one stored tensor, or one
/// DFloat11 module (several tensors).
#[derive(Clone, Debug)]
pub struct Unit {
    /// The tensors it decodes to, in order.
    pub outputs: Vec<TensorMeta>,
    /// Where its bytes are.
    pub payload: Payload,
}

impl Unit {
    /// Bytes this unit occupies in the file.
    pub fn stored_bytes(&self) -> u64 {
        match &self.payload {
            Payload::Raw(t) | Payload::Df11(t) => t.len(),
            Payload::Dfloat11(a) => a.iter().map(TensorInfo::len).sum(),
        }
    }

    /// Bytes of the tensors it decodes to.
    pub fn plain_bytes(&self) -> u64 {
        self.outputs.iter().fold(0u64, |a, o| a.saturating_add(o.num_bytes()))
    }
}

/// One safetensors file of a checkpoint.
pub struct Shard {
    /// The mapped file.
    pub file: SafetensorsFile,
    /// Name relative to the checkpoint directory (empty for a single file).
    pub rel: String,
    /// Units, in file order.
    pub units: Vec<Unit>,
    /// The file's `__metadata__` without df11's key.
    pub user_metadata: Option<Metadata>,
    /// The header length a plain file written from this shard pads its
    /// header to, so that it is the original file byte for byte: a df11
    /// file's stored [`Df11Meta::header_len`], or a plain file's own header
    /// length where [`SafetensorsFile::reproducible_header_len`] finds it.
    pub header_len: Option<u64>,
}

impl Shard {
    /// Decodes a unit of this shard to its tensors' little-endian bytes
    /// (borrowed from the map for raw tensors).
    pub fn decode_unit<'a>(&'a self, unit: &Unit, dec: &dyn Decoder) -> Result<Vec<std::borrow::Cow<'a, [u8]>>> {
        decode::materialize(self, unit, dec)
    }

    /// Compares the tensors `unit` decodes to with `expected` (one per
    /// output; `None` for one not to compare): per output, the first byte
    /// that differs, `None` where equal or not compared. A df11 tensor is
    /// compared as it is decoded ([`Decoder::compare`]), so its output is
    /// never held whole.
    pub fn compare_unit(&self, unit: &Unit, expected: &[Option<&[u8]>], dec: &dyn Decoder) -> Result<Vec<Option<u64>>> {
        decode::compare(self, unit, expected, dec)
    }

    /// The tensors a unit of this shard decodes to, as [`Checkpoint::tensors`] lists them.
    pub fn entries(&self, unit: &Unit) -> Vec<TensorEntry> {
        (0..unit.outputs.len()).map(|o| entry(self, unit, o)).collect()
    }

    /// The container version of a df11 unit (`None` for other storage).
    pub fn container_version(&self, unit: &Unit) -> Option<u16> {
        match &unit.payload {
            Payload::Df11(t) => container_version(self.file.bytes(t)),
            _ => None,
        }
    }

    /// Tells the kernel a unit's pages are no longer needed, so that streaming
    /// through a large checkpoint does not keep all of it resident.
    pub fn release(&self, unit: &Unit) {
        match &unit.payload {
            Payload::Raw(t) | Payload::Df11(t) => self.file.release(t),
            Payload::Dfloat11(a) => a.iter().for_each(|t| self.file.release(t)),
        }
    }
}

/// How a listed tensor is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// As is.
    Raw,
    /// A df11 container, with its record layout (`None` if the bytes do not name one).
    Df11 {
        /// The record layout.
        layout: Option<Layout>,
    },
    /// Part of a DFloat11 module.
    Dfloat11 {
        /// The module name.
        module: String,
    },
}

impl Storage {
    /// `raw`, `df11` or `dfloat11`.
    pub fn name(&self) -> &'static str {
        match self {
            Storage::Raw => "raw",
            Storage::Df11 { .. } => "df11",
            Storage::Dfloat11 { .. } => "dfloat11",
        }
    }
}

/// A tensor of a checkpoint as [`Checkpoint::tensors`] lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    /// Tensor name.
    pub name: String,
    /// Dtype once decoded.
    pub dtype: String,
    /// Shape once decoded.
    pub shape: Vec<u64>,
    /// How it is stored.
    pub storage: Storage,
    /// Bytes once decoded.
    pub decoded_bytes: u64,
    /// Bytes stored. A DFloat11 module stores its weights together: each gets
    /// the module's bytes in proportion to its decoded size.
    pub stored_bytes: u64,
    /// The file holding it, relative to the checkpoint directory (empty for a single file).
    pub file: String,
}

impl TensorEntry {
    /// Number of elements (saturating, like [`TensorMeta::num_elements`]).
    pub fn num_elements(&self) -> u64 {
        numel(&self.shape)
    }
}

fn numel(shape: &[u64]) -> u64 {
    shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).unwrap_or(u64::MAX)
}

/// Where a tensor is: shard, unit, output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Loc {
    shard: usize,
    unit: usize,
    output: usize,
}

/// An opened checkpoint.
pub struct Checkpoint {
    path: PathBuf,
    kind: Kind,
    input: Input,
    shards: Vec<Shard>,
    config: Option<serde_json::Value>,
    /// First location of each name.
    index: HashMap<String, Loc>,
}

impl Checkpoint {
    fn new(path: &Path, kind: Kind, input: Input, shards: Vec<Shard>, config: Option<serde_json::Value>) -> Self {
        let mut index = HashMap::new();
        for (s, shard) in shards.iter().enumerate() {
            for (u, unit) in shard.units.iter().enumerate() {
                for (o, out) in unit.outputs.iter().enumerate() {
                    index.entry(out.name.clone()).or_insert(Loc { shard: s, unit: u, output: o });
                }
            }
        }
        Checkpoint { path: path.to_path_buf(), kind, input, shards, config, index }
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What kind of checkpoint it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// A file or a directory, and for a directory its other files.
    pub fn input(&self) -> &Input {
        &self.input
    }

    /// Its safetensors files, in order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// `config.json`, for a directory that has one.
    pub fn config(&self) -> Option<&serde_json::Value> {
        self.config.as_ref()
    }

    /// All units with their shard, in order.
    pub fn units(&self) -> impl Iterator<Item = (&Shard, &Unit)> {
        self.shards.iter().flat_map(|f| f.units.iter().map(move |i| (f, i)))
    }

    /// Every tensor, in file order (shards in name order, tensors by position).
    pub fn tensors(&self) -> Vec<TensorEntry> {
        self.units().flat_map(|(s, u)| (0..u.outputs.len()).map(move |o| entry(s, u, o))).collect()
    }

    /// The tensor named `name`, if the checkpoint holds one.
    pub fn tensor(&self, name: &str) -> Option<TensorEntry> {
        let loc = self.index.get(name)?;
        let shard = &self.shards[loc.shard];
        Some(entry(shard, &shard.units[loc.unit], loc.output))
    }

    fn locate(&self, name: &str) -> Result<Loc> {
        self.index.get(name).copied().ok_or_else(|| Error::NotFound { path: self.path.clone(), tensor: name.into() })
    }

    fn meta(&self, loc: Loc) -> &TensorMeta {
        &self.shards[loc.shard].units[loc.unit].outputs[loc.output]
    }

    /// Decodes tensor `name` into a new buffer (little-endian bytes, as
    /// safetensors stores them) with the CPU decoder.
    pub fn decode(&self, name: &str) -> Result<Vec<u8>> {
        let loc = self.locate(name)?;
        let mut out = alloc_bytes(&self.path, name, self.meta(loc).num_bytes())?;
        self.decode_into(name, &mut out)?;
        Ok(out)
    }

    /// Decodes tensor `name` into `out`, which must hold exactly its decoded bytes.
    pub fn decode_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        self.decode_into_with(name, out, &CpuDecoder)
    }

    /// [`Checkpoint::decode_into`] with any decoder.
    pub fn decode_into_with(&self, name: &str, out: &mut [u8], dec: &dyn Decoder) -> Result<()> {
        let loc = self.locate(name)?;
        decode::decode_members(self, vec![(loc, out)], dec)
    }

    /// Decodes a group's tensors back to back into a new buffer of `group.bytes` bytes.
    pub fn decode_group(&self, group: &TensorGroup) -> Result<Vec<u8>> {
        let mut out = alloc_bytes(&self.path, "(group)", group.bytes)?;
        self.decode_group_into(group, &mut out)?;
        Ok(out)
    }

    /// Decodes a group's tensors back to back (each at its
    /// [`GroupMember::offset`]) into `out`, which must hold exactly
    /// `group.bytes` bytes. Units are decoded in parallel; a DFloat11 module
    /// is decoded once however many of its weights the group holds.
    pub fn decode_group_into(&self, group: &TensorGroup, out: &mut [u8]) -> Result<()> {
        self.decode_group_into_with(group, out, &CpuDecoder)
    }

    /// [`Checkpoint::decode_group_into`] with any decoder.
    pub fn decode_group_into_with(&self, group: &TensorGroup, out: &mut [u8], dec: &dyn Decoder) -> Result<()> {
        if out.len() as u64 != group.bytes {
            return Err(error::at(
                &self.path,
                format!("the output buffer has {} bytes, the group needs {}", out.len(), group.bytes),
            ));
        }
        let mut members = Vec::with_capacity(group.members.len());
        let mut rest = out;
        for m in &group.members {
            let loc = self.locate(&m.name)?;
            let want = self.meta(loc).num_bytes();
            if want != m.bytes || (rest.len() as u64) < want {
                return Err(error::tensor_err(
                    &self.path,
                    &m.name,
                    format!("the group gives it {} bytes, it decodes to {want}", m.bytes),
                ));
            }
            let (mine, tail) = rest.split_at_mut(want as usize);
            rest = tail;
            members.push((loc, mine));
        }
        decode::decode_members(self, members, dec)
    }

    /// A group of the named tensors, in the order given (for decoding a set
    /// of tensors that is not a block).
    pub fn group(&self, names: &[&str]) -> Result<TensorGroup> {
        let mut members = Vec::with_capacity(names.len());
        for name in names {
            let loc = self.locate(name)?;
            let m = self.meta(loc);
            members.push((m.name.clone(), m.num_elements(), m.num_bytes()));
        }
        Ok(TensorGroup::from_members(None, members))
    }

    /// The checkpoint's tensors grouped by transformer block (see [`groups`]).
    pub fn block_groups(&self) -> BlockGroups {
        BlockGroups::new(self.tensors().iter().map(|t| (t.name.as_str(), t.num_elements(), t.decoded_bytes)))
    }

    /// The df11-compressed tensors `names` as one [`crate::Group`], in that
    /// order: what [`gpu`] uploads to decode them in one kernel launch.
    /// Fails, naming the tensor, if one is not stored as a df11 container.
    pub fn compressed_group(&self, names: &[&str]) -> Result<crate::Group> {
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            let loc = self.locate(name)?;
            let shard = &self.shards[loc.shard];
            let Payload::Df11(t) = &shard.units[loc.unit].payload else {
                return Err(error::tensor_err(&shard.file.path, name, "is not stored as a df11 container"));
            };
            let c = crate::CompressedTensor::from_bytes(shard.file.bytes(t))
                .map_err(|e| error::tensor_err(&shard.file.path, name, e.to_string()))?;
            if c.num_elements != self.meta(loc).num_elements() {
                return Err(error::tensor_err(
                    &shard.file.path,
                    name,
                    format!(
                        "container holds {} elements, the shape needs {}",
                        c.num_elements,
                        self.meta(loc).num_elements()
                    ),
                ));
            }
            tensors.push(c);
        }
        Ok(crate::Group { tensors })
    }
}

fn alloc_bytes(path: &Path, name: &str, n: u64) -> Result<Vec<u8>> {
    let n = usize::try_from(n).map_err(|_| error::tensor_err(path, name, "too large for this machine"))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| error::tensor_err(path, name, format!("cannot allocate {n} bytes")))?;
    v.resize(n, 0);
    Ok(v)
}

fn entry(shard: &Shard, unit: &Unit, o: usize) -> TensorEntry {
    let out = &unit.outputs[o];
    let decoded_bytes = out.num_bytes();
    let (storage, stored_bytes) = match &unit.payload {
        Payload::Raw(_) => (Storage::Raw, unit.stored_bytes()),
        Payload::Df11(t) => (Storage::Df11 { layout: decode::container_layout(shard.file.bytes(t)) }, t.len()),
        Payload::Dfloat11(a) => {
            let module = a[0].name.strip_suffix(".luts").unwrap_or(&a[0].name).to_string();
            let share =
                (unit.stored_bytes() as u128 * decoded_bytes as u128 / unit.plain_bytes().max(1) as u128) as u64;
            (Storage::Dfloat11 { module }, share)
        }
    };
    TensorEntry {
        name: out.name.clone(),
        dtype: out.dtype.clone(),
        shape: out.shape.clone(),
        storage,
        decoded_bytes,
        stored_bytes,
        file: shard.rel.clone(),
    }
}

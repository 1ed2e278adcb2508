//! Saving and loading a network's variables so that nothing a user saved is lost or silently
//! corrupted.
//!
//! - [`save_atomically`] writes a safetensors file (the format candle's `VarMap::save` and
//!   `VarMap::load` use) through a temporary file in the same folder and a rename, so a failure
//!   never leaves a truncated checkpoint, and records a checksum of every tensor's bytes in the
//!   file's metadata.
//! - [`load_checkpoint`] loads all or nothing: every tensor of the file is checked against the
//!   variable it replaces (present, same shape, a dtype it converts from, finite values, the
//!   recorded checksum) before any variable is written. Candle's `VarMap::load` writes variables
//!   one by one and can stop halfway, leaving the network half old, half new.
//!
//! ```
//! use scalenet::candle_core::{DType, Device};
//! use scalenet::candle_nn::VarMap;
//! use scalenet::checkpoint::{load_checkpoint, save_atomically};
//! use scalenet::network;
//!
//! network! { pub struct Mlp { input: [4], fc1: linear(8), relu, fc2: linear(2) } }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let path = std::env::temp_dir().join(format!("scalenet-doc-{}.safetensors", std::process::id()));
//! let trained = VarMap::new();
//! Mlp::new_seeded(&trained, DType::F32, &Device::Cpu, 1)?;
//! save_atomically(&trained, &path)?;
//!
//! let restored = VarMap::new();
//! let net = Mlp::new_seeded(&restored, DType::F32, &Device::Cpu, 2)?; // build first, then load
//! load_checkpoint(&restored, &path)?;
//! # std::fs::remove_file(&path)?;
//! # let _ = net;
//! # Ok(())
//! # }
//! ```

use crate::finite::first_non_finite;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a checkpoint could not be saved or loaded; every variant names the file (`path`) and,
/// where one is at fault, the tensor (`name`, as in the `VarMap`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file could not be read or parsed.
    #[error("cannot read checkpoint {path}: {reason}")]
    Read {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file could not be written; nothing at `path` changed.
    #[error("cannot write checkpoint {path}: {reason}")]
    Write {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Loading into a `VarMap` in which no network was built.
    #[error("the varmap has no variables to load {path} into; build the network first (`Net::new_seeded` or `Net::new`), then load")]
    EmptyVarMap {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// Saving a `VarMap` in which no network was built.
    #[error("the varmap has no variables to save to {path}; build the network in it (`Net::new_seeded(&varmap, ..)`) and save that varmap")]
    NothingToSave {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// The file lacks a tensor the network has.
    #[error("checkpoint {path} has no tensor `{name}`, which the network needs; is it this network's checkpoint?")]
    Missing {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor at fault, as named in the `VarMap`.
        name: String,
    },
    /// The file has a tensor the network lacks.
    #[error("checkpoint {path} has a tensor `{name}` that the network does not; is it this network's checkpoint?")]
    Unexpected {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor at fault, as named in the `VarMap`.
        name: String,
    },
    /// The names differ but the shapes pair up one to one: the network's parameters were renamed,
    /// most often because a layer was inserted or removed before unnamed ones.
    #[error(
        "checkpoint {path} holds tensors of the network's shapes under other names, as if renamed (old -> new): {}; \
         unnamed layers are numbered by their position in the declaration, so inserting or removing a layer \
         renames those after it: name the layers (`conv3: conv(..)`) to keep their names stable, and load this \
         file into the declaration it was saved from",
        renamings_text(.renamings)
    )]
    Renamed {
        /// The checkpoint file.
        path: PathBuf,
        /// `(name in the file, name in the network)`, paired by shape in declaration order.
        renamings: Vec<(String, String)>,
    },
    /// A tensor's shape differs from the variable's.
    #[error("checkpoint {path}: tensor `{name}` has shape {found:?}, the network's variable {expected:?}")]
    Shape {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor at fault, as named in the `VarMap`.
        name: String,
        /// The variable's shape.
        expected: Vec<usize>,
        /// The tensor's shape.
        found: Vec<usize>,
    },
    /// A tensor's dtype does not convert to the variable's (integer against float).
    #[error(
        "checkpoint {path}: tensor `{name}` has dtype {found:?}, which does not convert to the variable's {expected:?}"
    )]
    DType {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor at fault, as named in the `VarMap`.
        name: String,
        /// The variable's dtype.
        expected: DType,
        /// The tensor's dtype.
        found: DType,
    },
    /// A tensor holds a NaN or an infinity.
    #[error("checkpoint {path}: tensor `{name}` holds a non-finite value ({found})")]
    NonFinite {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor at fault, as named in the `VarMap`.
        name: String,
        /// Where, and what.
        found: crate::finite::NonFiniteValue,
    },
    /// A tensor's bytes differ from those saved.
    #[error("checkpoint {path}: tensor `{name}` does not match the checksum recorded when it was saved; the file is corrupt")]
    Checksum {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor at fault, as named in the `VarMap`.
        name: String,
    },
}

fn renamings_text(renamings: &[(String, String)]) -> String {
    let pairs: Vec<String> = renamings.iter().map(|(old, new)| format!("`{old}` -> `{new}`")).collect();
    pairs.join(", ")
}

/// Orders names as a person numbers them: `conv_9` before `conv_10`.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut digits = c.to_string();
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                digits.push(d);
            }
            key.push((std::mem::take(&mut text), digits.parse().unwrap_or(u64::MAX)));
        } else {
            text.push(c);
        }
    }
    key.push((text, 0));
    key
}

/// The renamings that explain a file whose names differ from the network's: the unmatched names
/// on both sides, paired in declaration order within each shape. `None` unless every unmatched
/// name pairs up with one of the same shape.
fn renamings(file: &[(&String, Vec<usize>)], network: &[(&String, Vec<usize>)]) -> Option<Vec<(String, String)>> {
    if file.is_empty() || file.len() != network.len() {
        return None;
    }
    fn sorted<'a>(names: &[(&'a String, Vec<usize>)]) -> Vec<(&'a String, Vec<usize>)> {
        let mut names = names.to_vec();
        names.sort_by_key(|(name, _)| natural_key(name));
        names
    }
    let (mut file, network) = (sorted(file), sorted(network));
    let mut pairs = Vec::with_capacity(network.len());
    for (new, shape) in network {
        let old = file.iter().position(|(_, s)| *s == shape)?;
        pairs.push((file.remove(old).0.clone(), new.clone()));
    }
    pairs.sort_by_key(|(old, _)| natural_key(old));
    Some(pairs)
}

const CHECKSUM_PREFIX: &str = "scalenet.fnv64.";

/// FNV-1a over a tensor's bytes: cheap, stable, and enough to catch flipped bytes.
fn checksum(tensor: &Tensor) -> candle_core::Result<u64> {
    Ok(crate::init::fnv1a(&tensor_bytes(tensor)?))
}

fn tensor_bytes(tensor: &Tensor) -> candle_core::Result<Vec<u8>> {
    let tensor = tensor.to_device(&Device::Cpu)?.flatten_all()?;
    Ok(match tensor.dtype() {
        DType::F64 => tensor.to_vec1::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F32 => tensor.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        _ => tensor.to_dtype(DType::F64)?.to_vec1::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
    })
}

/// Saves every variable of `varmap` to `path` as safetensors, atomically, with a checksum of each
/// tensor in the metadata. On failure the file at `path` is untouched and no temporary is left;
/// an empty `varmap` is an error ([`CheckpointError::NothingToSave`]), not an empty file.
pub fn save_atomically(varmap: &VarMap, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let write = |reason: String| CheckpointError::Write { path: path.to_path_buf(), reason };
    if varmap.data().lock().expect("varmap lock poisoned").is_empty() {
        return Err(CheckpointError::NothingToSave { path: path.to_path_buf() });
    }
    if path.is_dir() {
        return Err(write("it is a directory".into()));
    }
    let tensors: Vec<(String, Tensor)> = {
        let data = varmap.data().lock().expect("varmap lock poisoned");
        let mut tensors: Vec<(String, Tensor)> =
            data.iter().map(|(name, var)| (name.clone(), var.as_tensor().clone())).collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors
    };
    let mut metadata = HashMap::new();
    for (name, tensor) in &tensors {
        let sum = checksum(tensor).map_err(|e| write(e.to_string()))?;
        metadata.insert(format!("{CHECKSUM_PREFIX}{name}"), format!("{sum:016x}"));
    }
    let bytes = safetensors::serialize(tensors.iter().map(|(name, tensor)| (name.as_str(), tensor)), Some(metadata))
        .map_err(|e| write(e.to_string()))?;
    let file_name = path.file_name().ok_or_else(|| write("it names no file".into()))?;
    let tmp = path.with_file_name(format!(".{}.{}.tmp", file_name.to_string_lossy(), std::process::id()));
    let result = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(error) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(write(error.to_string()));
    }
    Ok(())
}

/// Loads `path` into the variables of `varmap`, all or nothing (see the module documentation).
/// The network must be built first: its variables say what the file must hold.
pub fn load_checkpoint(varmap: &VarMap, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let at = || path.to_path_buf();
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::Read { path: at(), reason: e.to_string() })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| CheckpointError::Read { path: at(), reason: e.to_string() })?;
    let checksums = header.metadata().clone().unwrap_or_default();
    let mut loaded = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| CheckpointError::Read { path: at(), reason: e.to_string() })?;

    let data = varmap.data().lock().expect("varmap lock poisoned");
    if data.is_empty() {
        return Err(CheckpointError::EmptyVarMap { path: at() });
    }
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let unexpected: Vec<(&String, Vec<usize>)> =
        loaded.iter().filter(|(name, _)| !data.contains_key(*name)).map(|(n, t)| (n, t.dims().to_vec())).collect();
    let missing: Vec<(&String, Vec<usize>)> =
        data.iter().filter(|(name, _)| !loaded.contains_key(*name)).map(|(n, v)| (n, v.dims().to_vec())).collect();
    if let Some(renamings) = renamings(&unexpected, &missing) {
        return Err(CheckpointError::Renamed { path: at(), renamings });
    }
    if let Some((name, _)) = unexpected.iter().min() {
        return Err(CheckpointError::Unexpected { path: at(), name: (*name).clone() });
    }
    // Validate every tensor before writing any.
    let mut staged = Vec::with_capacity(names.len());
    for name in names {
        let var = &data[name];
        let tensor = loaded.remove(name).ok_or_else(|| CheckpointError::Missing { path: at(), name: name.clone() })?;
        let read = |e: candle_core::Error| CheckpointError::Read { path: at(), reason: format!("`{name}`: {e}") };
        if tensor.dims() != var.dims() {
            return Err(CheckpointError::Shape {
                path: at(),
                name: name.clone(),
                expected: var.dims().to_vec(),
                found: tensor.dims().to_vec(),
            });
        }
        if tensor.dtype().is_float() != var.dtype().is_float() {
            return Err(CheckpointError::DType {
                path: at(),
                name: name.clone(),
                expected: var.dtype(),
                found: tensor.dtype(),
            });
        }
        if let Some(recorded) = checksums.get(&format!("{CHECKSUM_PREFIX}{name}")) {
            if format!("{:016x}", checksum(&tensor).map_err(read)?) != *recorded {
                return Err(CheckpointError::Checksum { path: at(), name: name.clone() });
            }
        }
        if let Some(found) = first_non_finite(&tensor).map_err(read)? {
            return Err(CheckpointError::NonFinite { path: at(), name: name.clone(), found });
        }
        let tensor = tensor.to_dtype(var.dtype()).and_then(|t| t.to_device(var.device())).map_err(read)?;
        staged.push((var, tensor));
    }
    for (var, tensor) in staged {
        var.set(&tensor).map_err(|e| CheckpointError::Read { path: at(), reason: e.to_string() })?;
    }
    Ok(())
}

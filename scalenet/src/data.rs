//! Small labelled image datasets stored as safetensors: `images` (u8 or f32, `[N, H, W]` or
//! `[N, C, H, W]`) and `labels` (integers, `[N]`). `data/digits.safetensors` in the repository is
//! one (scikit-learn's 8x8 handwritten digits; `scripts/make_digits.py` regenerates it).
//! [`libsvm`] reads the LIBSVM / SVMlight text format into dense tensors; [`binary`] reads IDX
//! (Fashion-MNIST) and CIFAR-10 binary batches.

pub mod binary;
pub mod libsvm;

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
/// Why a dataset could not be read; every variant names the file.
#[non_exhaustive]
pub enum DataError {
    #[error("cannot read dataset {path}: {source}")]
    /// The file could not be read as safetensors.
    Read {
        /// The file at fault.
        path: PathBuf,
        /// What the system or candle reported.
        source: candle_core::Error,
    },
    #[error("dataset {path} has no tensor `{name}`; it needs `images` [N, H, W] or [N, C, H, W] and `labels` [N]")]
    /// The file lacks `images` or `labels`.
    Missing {
        /// The file at fault.
        path: PathBuf,
        /// The tensor or parameter at fault.
        name: &'static str,
    },
    #[error("dataset {path}: tensor `{name}` has shape {shape:?}, expected {expected}")]
    /// A tensor has the wrong rank or length.
    Shape {
        /// The file at fault.
        path: PathBuf,
        /// The tensor or parameter at fault.
        name: &'static str,
        /// Its shape.
        shape: Vec<usize>,
        /// What it should be.
        expected: String,
    },
    #[error("dataset {path} has no images")]
    /// The file holds no images.
    Empty {
        /// The file at fault.
        path: PathBuf,
    },
    #[error("dataset {path}: label {index} is {value}; labels are class indices, integers 0, 1, 2, ...")]
    /// A label is not a class index.
    Label {
        /// The file at fault.
        path: PathBuf,
        /// The example.
        index: usize,
        /// Its label.
        value: f64,
    },
    #[error(transparent)]
    /// An error of candle's.
    Candle(#[from] candle_core::Error),
}

/// Images `[N, C, H, W]` (f32) with integer labels `[N]` (u32), on one device.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    /// `[N, C, H, W]`, f32.
    pub images: Tensor,
    /// `[N]`, u32 class indices.
    pub labels: Tensor,
    /// The number of classes, one more than the largest label.
    pub classes: usize,
}

impl ImageDataset {
    /// Reads a safetensors file with `images` and `labels`, on the CPU.
    pub fn from_safetensors(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|source| DataError::Read { path: path.to_path_buf(), source })?;
        let mut take =
            |name: &'static str| tensors.remove(name).ok_or(DataError::Missing { path: path.to_path_buf(), name });
        let (images, labels) = (take("images")?, take("labels")?);
        let images = match images.rank() {
            3 => images.unsqueeze(1)?,
            4 => images,
            _ => {
                return Err(DataError::Shape {
                    path: path.to_path_buf(),
                    name: "images",
                    shape: images.dims().to_vec(),
                    expected: "[N, H, W] or [N, C, H, W]".into(),
                })
            }
        };
        let count = images.dim(0)?;
        if labels.dims() != [count] {
            return Err(DataError::Shape {
                path: path.to_path_buf(),
                name: "labels",
                shape: labels.dims().to_vec(),
                expected: format!("[{count}], one label per image"),
            });
        }
        if count == 0 {
            return Err(DataError::Empty { path: path.to_path_buf() });
        }
        // Checked in f64 before any cast: -1 as u32 would be class 4294967295, 0.5 class 0.
        let values = labels.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        if let Some((index, &value)) =
            values.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0 && v.fract() == 0.0 && **v < 1e9))
        {
            return Err(DataError::Label { path: path.to_path_buf(), index, value });
        }
        let labels = labels.to_dtype(DType::U32)?;
        let classes = labels.max(0)?.to_scalar::<u32>()? as usize + 1;
        Ok(ImageDataset { images: images.to_dtype(DType::F32)?, labels, classes })
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.dims()[0]
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        let d = self.images.dims();
        [d[1], d[2], d[3]]
    }

    /// Centred, unit-variance pixels (over the whole set): the input the calculus assumes.
    pub fn standardized(&self) -> candle_core::Result<Self> {
        let (mean, std) = self.pixel_moments()?;
        self.standardized_with(mean, std)
    }

    /// The mean and standard deviation of all pixels: what [`Self::standardized`] removes, to
    /// apply to a held-out set through [`Self::standardized_with`].
    pub fn pixel_moments(&self) -> candle_core::Result<(f64, f64)> {
        let mean = self.images.mean_all()?.to_scalar::<f32>()? as f64;
        let std = (&self.images - mean)?.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt() as f64;
        Ok((mean, std))
    }

    /// `(pixels - mean) / std`, with another set's moments (a test set standardized as its
    /// training set was).
    pub fn standardized_with(&self, mean: f64, std: f64) -> candle_core::Result<Self> {
        Ok(ImageDataset { images: ((&self.images - mean)? / std.max(1e-12))?, ..self.clone() })
    }

    /// Each pixel repeated `factor x factor` times (nearest-neighbour upsampling).
    pub fn upsampled(&self, factor: usize) -> candle_core::Result<Self> {
        let [_, h, w] = self.image_shape();
        Ok(ImageDataset { images: self.images.upsample_nearest2d(h * factor, w * factor)?, ..self.clone() })
    }

    /// The same examples in an order drawn from `seed`.
    pub fn shuffled(&self, seed: u64) -> candle_core::Result<Self> {
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let order = Tensor::new(order, self.images.device())?;
        Ok(ImageDataset {
            images: self.images.index_select(&order, 0)?,
            labels: self.labels.index_select(&order, 0)?,
            classes: self.classes,
        })
    }

    /// The first `count` examples and the rest.
    pub fn split(&self, count: usize) -> candle_core::Result<(Self, Self)> {
        let count = count.min(self.len());
        let part = |start, len| -> candle_core::Result<Self> {
            Ok(ImageDataset {
                images: self.images.narrow(0, start, len)?,
                labels: self.labels.narrow(0, start, len)?,
                classes: self.classes,
            })
        };
        Ok((part(0, count)?, part(count, self.len() - count)?))
    }

    /// Rank `rank`'s share of the examples among `world_size` processes, as PyTorch's
    /// `DistributedSampler` deals them: the examples at positions `rank`, `rank + world_size`,
    /// ..., after repeating the first ones so that every rank gets the same number,
    /// `ceil(len / world_size)` (so every rank takes the same number of steps). Shuffle with the
    /// same seed on every rank first; the ranks' batches `i` together are then the batch `i` of
    /// one process with a batch `world_size` times larger.
    pub fn shard(&self, rank: usize, world_size: usize) -> candle_core::Result<Self> {
        if world_size == 0 || rank >= world_size {
            candle_core::bail!("shard: rank {rank} in a group of {world_size} processes");
        }
        if self.is_empty() {
            return Ok(self.clone());
        }
        let share = self.len().div_ceil(world_size);
        let order: Vec<u32> = (0..share).map(|i| ((i * world_size + rank) % self.len()) as u32).collect();
        let order = Tensor::new(order, self.images.device())?;
        Ok(ImageDataset {
            images: self.images.index_select(&order, 0)?,
            labels: self.labels.index_select(&order, 0)?,
            classes: self.classes,
        })
    }

    /// The same examples on `device`.
    pub fn to_device(&self, device: &Device) -> candle_core::Result<Self> {
        Ok(ImageDataset {
            images: self.images.to_device(device)?,
            labels: self.labels.to_device(device)?,
            classes: self.classes,
        })
    }

    /// The same examples with images in `dtype` (the type a network computes in: `bf16`, `f16`).
    pub fn to_dtype(&self, dtype: candle_core::DType) -> candle_core::Result<Self> {
        Ok(ImageDataset { images: self.images.to_dtype(dtype)?, labels: self.labels.clone(), classes: self.classes })
    }

    /// Consecutive `(images, labels)` batches; the last one may be smaller.
    pub fn batches(&self, batch_size: usize) -> impl Iterator<Item = candle_core::Result<(Tensor, Tensor)>> + '_ {
        let batch_size = batch_size.max(1);
        (0..self.len()).step_by(batch_size).map(move |start| {
            let len = batch_size.min(self.len() - start);
            Ok((self.images.narrow(0, start, len)?, self.labels.narrow(0, start, len)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_path() {
        let error = ImageDataset::from_safetensors("no/such/file.safetensors").unwrap_err();
        assert!(error.to_string().contains("no/such/file.safetensors"), "{error}");
    }

    #[test]
    fn missing_tensor_is_named() -> Result<(), Box<dyn std::error::Error>> {
        let folder = tempfile::Builder::new().prefix("scalenet-data-").tempdir()?;
        let dir = folder.path();
        let path = dir.join("only-images.safetensors");
        let images = Tensor::zeros((2, 4, 4), DType::U8, &Device::Cpu)?;
        candle_core::safetensors::save(&std::collections::HashMap::from([("images".to_string(), images)]), &path)?;
        let error = ImageDataset::from_safetensors(&path).unwrap_err();
        assert!(matches!(error, DataError::Missing { name: "labels", .. }), "{error}");
        Ok(())
    }

    #[test]
    fn shards_deal_every_example_and_pad_to_equal_shares() -> candle_core::Result<()> {
        let dataset = ImageDataset {
            images: Tensor::arange(0f32, 5., &Device::Cpu)?.reshape((5, 1, 1, 1))?,
            labels: Tensor::arange(0u32, 5, &Device::Cpu)?,
            classes: 5,
        };
        let labels = |rank| dataset.shard(rank, 2)?.labels.to_vec1::<u32>();
        assert_eq!(labels(0)?, [0, 2, 4]);
        assert_eq!(labels(1)?, [1, 3, 0]); // padded with the first example, as DistributedSampler
                                           // Batch i of the ranks together is batch i of one process with twice the batch size.
        let batches: Vec<Vec<u32>> = (0..2)
            .map(|rank| dataset.shard(rank, 2)?.batches(2).next().unwrap()?.1.to_vec1::<u32>())
            .collect::<candle_core::Result<_>>()?;
        let mut union: Vec<u32> = batches.concat();
        union.sort();
        assert_eq!(union, [0, 1, 2, 3]);
        assert_eq!(dataset.shard(0, 1)?.labels.to_vec1::<u32>()?, [0, 1, 2, 3, 4]);
        assert!(dataset.shard(2, 2).is_err());
        Ok(())
    }
}

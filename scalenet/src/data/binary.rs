//! The two binary image formats the paper's strided-AlexNet experiment reads: IDX (MNIST and
//! Fashion-MNIST: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, gzipped or not) and the
//! CIFAR-10 binary batches (`data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`: records of
//! one label byte and 3 x 32 x 32 pixel bytes, channel-major).
//!
//! A malformed file is a typed error that names it and says what is wrong (magic number, element
//! type, sizes, a truncated or overlong body, an out-of-range label); never a panic.

use super::ImageDataset;
use candle_core::{DType, Device, Tensor};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
/// Why IDX or CIFAR-10 binary files could not be read; every variant names the file.
#[non_exhaustive]
pub enum BinaryError {
    #[error("cannot read {path}: {source}")]
    /// The file could not be read.
    Io {
        /// The file at fault.
        path: PathBuf,
        /// What the system or candle reported.
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    /// The file is not in the format it should be.
    Format {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    /// The image and label files disagree on the number of examples.
    Count {
        /// The images file.
        images: PathBuf,
        /// The labels file.
        labels: PathBuf,
        /// Images it holds.
        image_count: usize,
        /// Labels it holds.
        label_count: usize,
    },
    #[error("no CIFAR-10 batch files given")]
    /// No file was given.
    NoFiles,
    #[error(transparent)]
    /// An error of candle's.
    Candle(#[from] candle_core::Error),
}

/// The whole file, gunzipped when it starts with the gzip magic bytes.
fn read_bytes(path: &Path) -> Result<Vec<u8>, BinaryError> {
    let io = |source| BinaryError::Io { path: path.to_path_buf(), source };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut bytes).map_err(io)?;
        Ok(bytes)
    } else {
        Ok(raw)
    }
}

/// An IDX file of unsigned bytes: its dimensions and data.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>), BinaryError> {
    let bytes = read_bytes(path)?;
    let format = |problem: String| BinaryError::Format { path: path.to_path_buf(), problem };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(format("not an IDX file: it does not start with the magic bytes 0x00 0x00".into()));
    }
    if bytes[2] != 0x08 {
        return Err(format(format!("element type 0x{:02x}; only unsigned bytes (0x08) are read", bytes[2])));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header {
        return Err(format(format!("the header announces {rank} dimensions but the file has {} bytes", bytes.len())));
    }
    let dims: Vec<usize> =
        bytes[4..header].chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let expected = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    match expected {
        Some(n) if n == bytes.len() - header => Ok((dims, bytes[header..].to_vec())),
        Some(n) => {
            Err(format(format!("dimensions {dims:?} need {n} bytes of data, the file has {}", bytes.len() - header)))
        }
        None => Err(format(format!("dimensions {dims:?} overflow"))),
    }
}

/// The bytes of an IDX file of unsigned bytes with dimensions `dims` (the inverse of
/// [`read_idx`]): for writing small datasets and test files.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

impl ImageDataset {
    /// Images (`[N, H, W]` IDX) and labels (`[N]` IDX), as Fashion-MNIST and MNIST ship them:
    /// pixels 0..255 as f32, one channel.
    pub fn from_idx(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Self, BinaryError> {
        let (images, labels) = (images.as_ref(), labels.as_ref());
        let (image_dims, pixels) = read_idx(images)?;
        let (label_dims, classes) = read_idx(labels)?;
        if image_dims.len() != 3 {
            return Err(BinaryError::Format {
                path: images.to_path_buf(),
                problem: format!("images have dimensions {image_dims:?}; expected [N, H, W]"),
            });
        }
        if label_dims.len() != 1 {
            return Err(BinaryError::Format {
                path: labels.to_path_buf(),
                problem: format!("labels have dimensions {label_dims:?}; expected [N]"),
            });
        }
        if image_dims[0] != label_dims[0] {
            return Err(BinaryError::Count {
                images: images.to_path_buf(),
                labels: labels.to_path_buf(),
                image_count: image_dims[0],
                label_count: label_dims[0],
            });
        }
        dataset(pixels, [image_dims[0], 1, image_dims[1], image_dims[2]], classes, labels)
    }

    /// CIFAR-10 binary batches, concatenated in the order given: `3 x 32 x 32` images with
    /// pixels 0..255 as f32.
    pub fn from_cifar10(files: &[PathBuf]) -> Result<Self, BinaryError> {
        const RECORD: usize = 1 + 3 * 32 * 32;
        if files.is_empty() {
            return Err(BinaryError::NoFiles);
        }
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        for path in files {
            let bytes = read_bytes(path)?;
            if bytes.is_empty() || bytes.len() % RECORD != 0 {
                return Err(BinaryError::Format {
                    path: path.clone(),
                    problem: format!("{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records", bytes.len()),
                });
            }
            for (index, record) in bytes.chunks_exact(RECORD).enumerate() {
                if record[0] > 9 {
                    return Err(BinaryError::Format {
                        path: path.clone(),
                        problem: format!("record {index} has label {}; CIFAR-10 labels are 0..9", record[0]),
                    });
                }
                labels.push(record[0]);
                pixels.extend_from_slice(&record[1..]);
            }
        }
        let count = labels.len();
        dataset(pixels, [count, 3, 32, 32], labels, &files[0])
    }
}

fn dataset(
    pixels: Vec<u8>,
    shape: [usize; 4],
    labels: Vec<u8>,
    labels_path: &Path,
) -> Result<ImageDataset, BinaryError> {
    if labels.is_empty() {
        return Err(BinaryError::Format { path: labels_path.to_path_buf(), problem: "no examples".into() });
    }
    let classes = *labels.iter().max().expect("nonempty") as usize + 1;
    let images = Tensor::from_vec(pixels, shape.to_vec(), &Device::Cpu)?.to_dtype(DType::F32)?;
    let labels = Tensor::from_vec(labels, shape[0], &Device::Cpu)?.to_dtype(DType::U32)?;
    Ok(ImageDataset { images, labels, classes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A folder removed when the test ends; `file` writes one named file in it.
    struct Scratch(tempfile::TempDir);

    impl Scratch {
        fn new() -> Self {
            Self(tempfile::Builder::new().prefix("scalenet-binary-").tempdir().expect("temp dir"))
        }

        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        }
    }

    #[test]
    fn idx_images_and_labels_plain_and_gzipped() -> Result<(), Box<dyn std::error::Error>> {
        let scratch = Scratch::new();
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let images = scratch.file("images-idx3", &idx_bytes(&[2, 3, 4], &pixels));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&idx_bytes(&[2], &[7, 1]))?;
        let labels = scratch.file("labels-idx1.gz", &gz.finish()?);
        let data = ImageDataset::from_idx(&images, &labels)?;
        assert_eq!(data.images.dims(), &[2, 1, 3, 4]);
        assert_eq!(data.labels.to_vec1::<u32>()?, vec![7, 1]);
        assert_eq!(data.classes, 8);
        assert_eq!(data.images.flatten_all()?.to_vec1::<f32>()?[23], 23.0);
        Ok(())
    }

    #[test]
    fn malformed_idx_files_are_typed_errors() {
        let scratch = Scratch::new();
        let labels = scratch.file("ok-labels", &idx_bytes(&[2], &[0, 1]));
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("bad-magic", vec![1, 2, 8, 1, 0, 0, 0, 1, 5], "magic"),
            ("floats", vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0], "element type 0x0d"),
            ("truncated", idx_bytes(&[2, 3, 4], &[0; 10]), "need 24 bytes of data, the file has 10"),
            ("short-header", vec![0, 0, 8, 3, 0, 0], "announces 3 dimensions"),
        ];
        for (name, bytes, expected) in cases {
            let path = scratch.file(name, &bytes);
            let error = ImageDataset::from_idx(&path, &labels).unwrap_err().to_string();
            assert!(error.contains(expected) && error.contains(name), "{name}: {error}");
        }
        let images = scratch.file("three-images", &idx_bytes(&[3, 2, 2], &[0; 12]));
        let error = ImageDataset::from_idx(&images, &labels).unwrap_err();
        assert!(matches!(error, BinaryError::Count { image_count: 3, label_count: 2, .. }), "{error}");
    }

    #[test]
    fn cifar_records_and_their_errors() -> Result<(), Box<dyn std::error::Error>> {
        let scratch = Scratch::new();
        let mut bytes = Vec::new();
        for label in [3u8, 9] {
            bytes.push(label);
            bytes.extend((0..3072).map(|i| (i % 251) as u8));
        }
        let first = scratch.file("data_batch_1.bin", &bytes);
        let second = scratch.file("data_batch_2.bin", &bytes[..3073]);
        let data = ImageDataset::from_cifar10(&[first, second])?;
        assert_eq!(data.images.dims(), &[3, 3, 32, 32]);
        assert_eq!(data.labels.to_vec1::<u32>()?, vec![3, 9, 3]);
        // Channel-major: the first green pixel is byte 1024 of the record.
        assert_eq!(data.images.get(0)?.get(1)?.get(0)?.get(0)?.to_scalar::<f32>()?, (1024 % 251) as f32);
        let error = ImageDataset::from_cifar10(&[scratch.file("short.bin", &bytes[..3000])]).unwrap_err().to_string();
        assert!(error.contains("short.bin") && error.contains("3000 bytes"), "{error}");
        let mut bad = bytes.clone();
        bad[3073] = 10;
        let error = ImageDataset::from_cifar10(&[scratch.file("label.bin", &bad)]).unwrap_err().to_string();
        assert!(error.contains("record 1 has label 10"), "{error}");
        assert!(matches!(ImageDataset::from_cifar10(&[]), Err(BinaryError::NoFiles)));
        Ok(())
    }
}

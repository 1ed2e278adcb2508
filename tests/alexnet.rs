//! The strided AlexNet of section 10 on tiny files in both formats it reads, written here: a
//! CIFAR-10 binary batch and Fashion-MNIST-style IDX files (gzipped), through the same loading,
//! padding and training path as `scalenet-experiments alexnet`.

use candle_core::Device;
use fixtures::alexnet::{load, prepare, smoothed, train, Protocol, Run, Size};
use scalenet::calculus::InitScheme;
use scalenet::data::binary::idx_bytes;
use std::io::Write;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn dir(name: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix(&format!("scalenet-alexnet-{name}-")).tempdir()?)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

fn check_training(dir: &std::path::Path, channels: usize) -> Result<()> {
    let data = prepare(&load(dir)?)?;
    assert_eq!(data.image_shape(), [channels, 32, 32]);
    let protocol = Protocol { size: Size::Small, steps: 3, batch_size: 4, output_std: 0.05 };
    for init in [InitScheme::Geometric, InitScheme::FanIn] {
        let losses = train(&data, Run { init, learning_rate: 0.01, seed: 1 }, &protocol, &Device::Cpu)?;
        assert_eq!(losses.len(), 3);
        // Ten classes and an output calibrated to std 0.05: the first loss is close to ln 10.
        assert!((losses[0] - 10f64.ln()).abs() < 0.1, "{losses:?}");
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    }
    Ok(())
}

#[test]
fn trains_on_a_cifar10_batch_file() -> Result<()> {
    let folder = dir("cifar")?;
    let dir = folder.path();
    let mut bytes = Vec::new();
    for record in 0..12u8 {
        bytes.push(record % 10);
        bytes.extend((0..3072).map(|i| ((i * 7 + record as usize * 13) % 256) as u8));
    }
    std::fs::write(dir.join("data_batch_1.bin"), bytes)?;
    check_training(dir, 3)
}

#[test]
fn trains_on_gzipped_idx_files_padded_to_32() -> Result<()> {
    let folder = dir("idx")?;
    let dir = folder.path();
    let pixels: Vec<u8> = (0..12 * 28 * 28).map(|i| (i * 31 % 256) as u8).collect();
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gzip(&idx_bytes(&[12, 28, 28], &pixels))?)?;
    let labels: Vec<u8> = (0..12).map(|i| i % 10).collect();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gzip(&idx_bytes(&[12], &labels))?)?;
    check_training(dir, 1)
}

#[test]
fn a_folder_without_either_format_says_what_it_looked_for() -> Result<()> {
    let error = load(dir("empty")?.path()).unwrap_err().to_string();
    assert!(error.contains("data_batch_") && error.contains("train-images-idx3-ubyte"), "{error}");
    Ok(())
}

#[test]
fn smoothing_is_a_trailing_window() {
    assert_eq!(smoothed(&[1.0, 3.0, 5.0, 7.0], 2), vec![1.0, 2.0, 4.0, 6.0]);
    // A diverged step makes the windows that hold it infinite, not NaN.
    let inf = f64::INFINITY;
    assert_eq!(smoothed(&[1.0, inf, 3.0, 5.0], 2), vec![1.0, inf, inf, 4.0]);
}

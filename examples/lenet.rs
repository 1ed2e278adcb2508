//! Trains the strided LeNet that `network!` designs on real data: the 8x8 handwritten digits that
//! scikit-learn bundles (`data/digits.safetensors`), upsampled to 32x32.
//!
//! ```text
//! cargo run --release --example lenet
//! cargo run --release --example lenet -- --init fan_in --epochs 10 --lr 0.05
//! ```

use candle_core::{DType, Device, Module, D};
use candle_nn::{loss, Optimizer, VarMap, SGD};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use scalenet::data::ImageDataset;
use scalenet::network;
use std::path::PathBuf;

network! {
    /// Strided LeNet for 1x32x32 digits: average pooling instead of max pooling (Table 1).
    pub struct LeNet {
        input: [1, 32, 32],
        typical_kernel: 5,
        conv1: conv(6, kernel = 5, padding = 2),
        relu,
        avg_pool(2),
        conv2: conv(16, kernel = 5),
        relu,
        avg_pool(2),
        flatten,
        fc1: linear(120),
        relu,
        fc2: linear(84),
        relu,
        fc3: linear(10),
    }
}

network! {
    /// The same network with Kaiming fan-in init, for comparison.
    pub struct LeNetFanIn {
        input: [1, 32, 32],
        init: fan_in,
        typical_kernel: 5,
        conv1: conv(6, kernel = 5, padding = 2),
        relu,
        avg_pool(2),
        conv2: conv(16, kernel = 5),
        relu,
        avg_pool(2),
        flatten,
        fc1: linear(120),
        relu,
        fc2: linear(84),
        relu,
        fc3: linear(10),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Init {
    Geometric,
    FanIn,
}

#[derive(Parser)]
#[command(about = "Train the strided LeNet designed by the scaling calculus on the bundled digits")]
struct Args {
    #[arg(long, value_enum, default_value = "geometric")]
    init: Init,
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The dataset (safetensors with `images` and `labels`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/digits.safetensors"))]
    data: PathBuf,
}

fn accuracy(model: &dyn Module, data: &ImageDataset) -> candle_core::Result<f64> {
    let mut correct = 0;
    for batch in data.batches(256) {
        let (images, labels) = batch?;
        let predicted = model.forward(&images)?.argmax(D::Minus1)?;
        correct += predicted.eq(&labels)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()?;
    }
    Ok(correct as f64 / data.len() as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = Device::Cpu;
    let data = ImageDataset::from_safetensors(&args.data)?.standardized()?.upsampled(4)?.shuffled(args.seed)?;
    let (train, test) = data.split(1500)?;
    println!("digits: {} train, {} test, images {:?}", train.len(), test.len(), train.image_shape());

    let varmap = VarMap::new();
    let (model, report): (Box<dyn Module>, scalenet::Report) = match args.init {
        Init::Geometric => (Box::new(LeNet::new_seeded(&varmap, DType::F32, &device, args.seed)?), LeNet::report()),
        Init::FanIn => {
            (Box::new(LeNetFanIn::new_seeded(&varmap, DType::F32, &device, args.seed)?), LeNetFanIn::report())
        }
    };
    println!("{report}\n");
    let mut optimizer = SGD::new(varmap.all_vars(), args.lr)?;

    let steps_per_epoch = train.len().div_ceil(args.batch_size);
    let progress = ProgressBar::new((args.epochs * steps_per_epoch) as u64);
    progress.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")?);
    for epoch in 1..=args.epochs {
        let shuffled = train.shuffled(args.seed * 1000 + epoch as u64)?;
        let (mut total, mut count) = (0.0, 0);
        for batch in shuffled.batches(args.batch_size) {
            let (images, labels) = batch?;
            let loss = loss::cross_entropy(&model.forward(&images)?, &labels)?;
            optimizer.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()? as f64;
            count += 1;
            progress.set_message(format!("epoch {epoch} loss {:.4}", total / count as f64));
            progress.inc(1);
        }
        let test_accuracy = accuracy(model.as_ref(), &test)?;
        // `suspend` prints even when the bar is hidden (output not a terminal), unlike `println`.
        progress.suspend(|| {
            println!(
                "epoch {epoch:>2}: train loss {:.4}, test accuracy {:.1}%",
                total / count as f64,
                100.0 * test_accuracy
            )
        });
    }
    progress.finish_and_clear();
    Ok(())
}

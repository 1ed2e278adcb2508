//! Trains the LeNet that `network!` designs (average pooling in place of max pooling) on real data: the 8x8 handwritten digits that
//! scikit-learn bundles (`data/digits.safetensors`), upsampled to 32x32.
//!
//! ```text
//! cargo run --release --example lenet
//! cargo run --release --example lenet -- --init fan-in --epochs 10 --lr 0.05
//! ```

use candle_core::{DType, Device};
use candle_nn::{ModuleT, VarMap};
use clap::{Parser, ValueEnum};
use fixtures::fit::{fit, Schedule};
use fixtures::networks::{DigitsLeNet, DigitsLeNetFanIn};
use scalenet::data::ImageDataset;

#[derive(Clone, Copy, ValueEnum)]
enum Init {
    Geometric,
    FanIn,
}

#[derive(Parser)]
#[command(about = "Train the LeNet designed by the scaling calculus on the bundled digits")]
struct Args {
    #[arg(long, value_enum, default_value = "geometric")]
    init: Init,
    #[command(flatten)]
    schedule: Schedule,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = Device::Cpu;
    let data = ImageDataset::from_safetensors(&args.schedule.data)?
        .standardized()?
        .upsampled(4)?
        .shuffled(args.schedule.seed)?;
    let (train, test) = data.split(1500)?;
    println!("digits: {} train, {} test, images {:?}", train.len(), test.len(), train.image_shape());

    let varmap = VarMap::new();
    let (model, report): (Box<dyn ModuleT>, scalenet::Report) = match args.init {
        Init::Geometric => (
            Box::new(DigitsLeNet::new_seeded(&varmap, DType::F32, &device, args.schedule.seed)?),
            DigitsLeNet::report(),
        ),
        Init::FanIn => (
            Box::new(DigitsLeNetFanIn::new_seeded(&varmap, DType::F32, &device, args.schedule.seed)?),
            DigitsLeNetFanIn::report(),
        ),
    };
    println!("{report}\n");
    fit(model.as_ref(), &varmap, &train, &test, &args.schedule)
}

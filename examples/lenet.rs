//! Trains the strided LeNet that `network!` designs on real data: the 8x8 handwritten digits that
//! scikit-learn bundles (`data/digits.safetensors`), upsampled to 32x32.
//!
//! ```text
//! cargo run --release --example lenet
//! cargo run --release --example lenet -- --init fan-in --epochs 10 --lr 0.05
//! ```

use candle_core::{DType, Device};
use candle_nn::{ModuleT, VarMap};
use clap::{Parser, ValueEnum};
use scalenet::data::ImageDataset;
use scalenet::network;
#[path = "support/fit.rs"]
mod fit;
use fit::{fit, Schedule};

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
        Init::Geometric => {
            (Box::new(LeNet::new_seeded(&varmap, DType::F32, &device, args.schedule.seed)?), LeNet::report())
        }
        Init::FanIn => {
            (Box::new(LeNetFanIn::new_seeded(&varmap, DType::F32, &device, args.schedule.seed)?), LeNetFanIn::report())
        }
    };
    println!("{report}\n");
    fit(model.as_ref(), &varmap, &train, &test, &args.schedule)
}

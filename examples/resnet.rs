//! Trains a small unnormalized pre-activation ResNet (section 11) on the bundled digits, upsampled
//! to 16x16: an identity block, a downsampling block with a projection shortcut, and the
//! section 11.1 bottleneck, conditioned by the calculus without batch normalization.
//!
//! Two variants. `strided` downsamples with strided convolutions and meets the calculus's
//! assumptions: its measured weight-to-gradient ratios agree within a factor 1.34
//! (`tests/residual.rs`) and it trains. `pooled` downsamples with average pooling (the paper's
//! shortcut, a pooling bottleneck) and ends with global average pooling: pooling makes the
//! backward signal spatially coherent, which assumption 2 excludes, and the measured ratios spread
//! by a factor of ~30; it barely trains at any learning rate.
//!
//! ```text
//! cargo run --release --example resnet
//! cargo run --release --example resnet -- --variant pooled
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
    /// A small pre-activation ResNet without normalization, downsampling with strided convolutions.
    pub struct ResNetSmall {
        input: [1, 16, 16],
        typical_kernel: 3,
        stem: conv(32, kernel = 3, padding = 1),
        res1: residual(beta = 0.5) {                      // B(x) = alpha*S(x) + beta*F(x), alpha = sqrt(1 - beta^2)
            relu, conv(32, kernel = 3, padding = 1),
            relu, conv(32, kernel = 3, padding = 1),
        },
        res2: residual(beta = 0.5) {
            relu, conv(64, kernel = 2, stride = 2),
            relu, conv(64, kernel = 3, padding = 1),
        } shortcut {
            conv(64, kernel = 2, stride = 2),
        },
        res3: bottleneck(out = 128, width = 32, stride = 1, beta = 0.5),
        relu, flatten, fc: linear(10),
    }
}

network! {
    /// The same stages, downsampling with average pooling and a global-average-pool head.
    pub struct ResNetSmallPooled {
        input: [1, 16, 16],
        typical_kernel: 3,
        stem: conv(32, kernel = 3, padding = 1),
        res1: residual(beta = 0.5) {
            relu, conv(32, kernel = 3, padding = 1),
            relu, conv(32, kernel = 3, padding = 1),
        },
        res2: residual(beta = 0.5) {
            relu, conv(64, kernel = 2, stride = 2),
            relu, conv(64, kernel = 3, padding = 1),
        } shortcut {
            avg_pool(2), conv(64, kernel = 1),
        },
        res3: bottleneck(out = 128, width = 32, stride = 2, beta = 0.5),
        relu, avg_pool(4), flatten, fc: linear(10),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Variant {
    Strided,
    Pooled,
}

#[derive(Parser)]
#[command(about = "Train a small unnormalized pre-activation ResNet on the bundled digits")]
struct Args {
    #[arg(long, value_enum, default_value = "strided")]
    variant: Variant,
    #[command(flatten)]
    schedule: Schedule,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = Device::Cpu;
    let data = ImageDataset::from_safetensors(&args.schedule.data)?
        .standardized()?
        .upsampled(2)?
        .shuffled(args.schedule.seed)?;
    let (train, test) = data.split(1500)?;
    let varmap = VarMap::new();
    let (model, report): (Box<dyn ModuleT>, scalenet::Report) = match args.variant {
        Variant::Strided => (
            Box::new(ResNetSmall::new_seeded(&varmap, DType::F32, &device, args.schedule.seed)?),
            ResNetSmall::report(),
        ),
        Variant::Pooled => (
            Box::new(ResNetSmallPooled::new_seeded(&varmap, DType::F32, &device, args.schedule.seed)?),
            ResNetSmallPooled::report(),
        ),
    };
    println!("{report}\n");
    fit(model.as_ref(), &varmap, &train, &test, &args.schedule)
}

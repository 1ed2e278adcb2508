//! Trains the LeNet that `network!` designs (average pooling in place of max pooling) on real
//! data: the 8x8 handwritten digits that scikit-learn bundles (`data/digits.safetensors`),
//! upsampled to 32x32.
//!
//! ```text
//! cargo run --release --example lenet
//! cargo run --release --example lenet -- --init fan-in --epochs 10 --lr 0.05
//! # in f16 with f32 master weights and the loss scale the calculus chooses (bf16 likewise):
//! cargo run --release --example lenet -- --precision f16
//! # data-parallel over 2 processes (MPI), 32 examples per process and step:
//! cargo build --release --features mpi --example lenet
//! mpirun -np 2 target/release/examples/lenet --distributed
//! ```

use candle_nn::VarMap;
use clap::{Parser, ValueEnum};
use fixtures::fit::{digits, fit, seeded, Schedule};
use fixtures::networks::{DigitsLeNet, DigitsLeNetFanIn, DigitsLeNetIndependent};

#[derive(Clone, Copy, ValueEnum)]
enum Init {
    Geometric,
    FanIn,
    /// Geometric, planned with positions independent (the paper's model: `spatial_coherence: false`).
    GeometricIndependent,
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
    scalenet::ops::park_idle_candle_threads();
    let args = Args::parse();
    let (train, test) = digits(&args.schedule, 4)?;
    let varmap = VarMap::new();
    let (model, report) = match args.init {
        Init::Geometric => seeded::<DigitsLeNet>(&varmap, &args.schedule)?,
        Init::FanIn => seeded::<DigitsLeNetFanIn>(&varmap, &args.schedule)?,
        Init::GeometricIndependent => seeded::<DigitsLeNetIndependent>(&varmap, &args.schedule)?,
    };
    if args.schedule.speaks()? {
        println!("{report}\n");
    }
    fit(model.as_ref(), report, &varmap, &train, &test, &args.schedule)
}

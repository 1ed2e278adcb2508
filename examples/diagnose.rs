//! Measures a network at initialization against the calculus, layer by layer: forward and
//! backward second moments, scaling factors, gammas (Theorem 1 and the extrinsic eq. 2) and bias
//! scaling (eq. 7), averaged over several initializations with batch-size-1 semantics. Writes the
//! table and JSON to an output folder.
//!
//! ```text
//! cargo run --release --example diagnose -- lenet --out out/diagnose
//! cargo run --release --example diagnose -- mlp --seeds 16
//! ```

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use clap::{Parser, ValueEnum};
use indicatif::ProgressBar;
use scalenet::diagnostics::{measure, seeded_normal, Diagnosis};
use scalenet::{network, Network};
use std::path::{Path, PathBuf};

network! {
    /// The strided LeNet of the paper's Fig. 1 and Fig. 2.
    pub struct LeNet {
        input: [3, 32, 32],
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
    /// The paper's LIBSVM network (section 9).
    pub struct Mlp {
        input: [784],
        fc1: linear(384),
        relu,
        fc2: linear(64),
        relu,
        fc3: linear(10),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    Lenet,
    Mlp,
}

#[derive(Parser)]
#[command(about = "Measure a network at initialization against the scaling calculus")]
struct Args {
    #[arg(value_enum)]
    network: Which,
    #[arg(long, default_value_t = 8)]
    seeds: u64,
    #[arg(long, default_value_t = 1024)]
    samples: usize,
    #[arg(long, default_value = "out/diagnose")]
    out: PathBuf,
}

fn run<N: Network>(
    build: impl Fn(&VarMap, u64) -> candle_core::Result<N>,
    input: &[usize],
    args: &Args,
) -> candle_core::Result<Diagnosis> {
    let progress = ProgressBar::new(args.seeds);
    let mut all = Vec::new();
    for seed in 0..args.seeds {
        let varmap = VarMap::new();
        let net = build(&varmap, seed)?;
        let mut dims = vec![args.samples];
        dims.extend_from_slice(input);
        let xs = seeded_normal(&Tensor::zeros(dims, DType::F32, &Device::Cpu)?, 1000 + seed)?;
        all.push(measure(&net, &varmap, &xs, 2000 + seed)?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(Diagnosis::mean(&all).expect("at least one seed"))
}

/// Writes `contents` to `path` atomically: a temporary file in the same folder, then a rename.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = Device::Cpu;
    let diagnosis = match args.network {
        Which::Lenet => run(|v, s| LeNet::new_seeded(v, DType::F32, &device, s), &LeNet::INPUT_SHAPE, &args)?,
        Which::Mlp => run(|v, s| Mlp::new_seeded(v, DType::F32, &device, s), &Mlp::INPUT_SHAPE, &args)?,
    };
    println!("{diagnosis}");
    std::fs::create_dir_all(&args.out)?;
    let name = diagnosis.network.to_lowercase();
    write_atomically(&args.out.join(format!("{name}.txt")), &diagnosis.to_string())?;
    write_atomically(&args.out.join(format!("{name}.json")), &diagnosis.to_json())?;
    println!("wrote {}/{name}.txt and {name}.json", args.out.display());
    Ok(())
}

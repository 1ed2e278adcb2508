//! The paper's unnormalized pre-activation ResNet-50 (section 11.2) for 3x224x224 ImageNet input:
//! 16 section-11.1 bottlenecks in 4 stages (widths 64-512, outputs 256-2048). Prints the report,
//! the parameter count, and runs one forward/backward pass on a small batch.
//!
//! The stem is a 4x4 convolution of stride 4 (224 -> 56), where torchvision has a 7x7 stride-2
//! convolution and a max pool: both break the stride rule and max pooling of Table 1.
//!
//! ```text
//! cargo run --release --example resnet50 -- --batch 2
//! cargo run --release --example resnet50 -- --batch 4 --gammas 4   # gamma per weight layer
//! cargo run --release --features cudnn --example resnet50 -- --device cuda --batch 32
//! ```

use candle_core::{DType, Module, Tensor};
use candle_nn::VarMap;
use clap::Parser;
use fixtures::device::DeviceChoice;
use fixtures::networks::{ResNet50, ResNet50Centred, ResNet50Independent};
use scalenet::diagnostics::{row_centred_second_moment, second_moment, seeded_normal, weight_to_gradient_ratios};
use scalenet::Network;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Also measure every weight layer's gamma over this many initializations (batch-size-1
    /// semantics over `--batch` samples each), planned with and without spatial coherence.
    #[arg(long, default_value_t = 0)]
    gammas: u64,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceChoice,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    scalenet::ops::park_idle_candle_threads();
    let args = Args::parse();
    println!("{}\n", ResNet50::report());
    let varmap = VarMap::new();
    let device = args.device.open()?;
    let net = ResNet50::new_seeded(&varmap, DType::F32, &device, 0)?;
    // Counts the one calibration scalar too.
    let parameters: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    println!("parameters: {parameters} ({:.2} million)", parameters as f64 / 1e6);

    let images = seeded_normal(&Tensor::zeros((args.batch, 3, 224, 224), DType::F32, &device)?, 1)?;
    let start = Instant::now();
    let logits = net.forward(&images)?;
    device.synchronize()?;
    let forward = start.elapsed();
    let std = logits.flatten_all()?.to_vec1::<f32>()?;
    let mean = std.iter().sum::<f32>() / std.len() as f32;
    let std = (std.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / std.len() as f32).sqrt();
    let grads = logits.sum_all()?.backward()?;
    device.synchronize()?;
    let backward = start.elapsed() - forward;
    // Every trainable variable, i.e. all but the output calibration (applied detached).
    let trainable: Vec<_> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "output_calibration")
        .map(|(_, v)| v.clone())
        .collect();
    let with_gradient = trainable.iter().filter(|v| grads.get(v.as_tensor()).is_some()).count();
    println!(
        "forward {:?} -> {:?} in {forward:.2?}, output std {std:.4} (target {}), backward in {:.2?}: {with_gradient}/{} parameters got a gradient",
        images.dims(),
        logits.dims(),
        ResNet50::plan().output_std,
        backward,
        trainable.len()
    );
    if args.gammas > 0 {
        measure_gammas::<ResNet50>("spatial coherence (default)", &args)?;
        measure_gammas::<ResNet50Independent>("positions independent (the paper's model)", &args)?;
        measure_gammas::<ResNet50Centred>("centred weights (`centred_weights: true`)", &args)?;
    }
    Ok(())
}

/// Every weight layer's measured gamma over its prediction, averaged over `args.gammas`
/// initializations, and the spread (max / min) of the measured gammas.
fn measure_gammas<N: Network>(title: &str, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let plan = N::plan();
    let layers: Vec<(String, f64)> =
        plan.weight_steps().map(|s| (s.path.to_string(), s.step.gamma.unwrap_or(f64::NAN))).collect();
    let centred: Vec<bool> = plan.weight_steps().map(|s| s.step.weight().is_some_and(|w| w.centred)).collect();
    let mut measured = vec![0.0; layers.len()];
    let start = Instant::now();
    let device = args.device.open()?;
    for seed in 0..args.gammas {
        let varmap = VarMap::new();
        let net = N::new_seeded(&varmap, DType::F32, &device, 100 + seed)?;
        let images = seeded_normal(&Tensor::zeros((args.batch, 3, 224, 224), DType::F32, &device)?, 200 + seed)?;
        let ratios = weight_to_gradient_ratios(&varmap, &net.forward_hooked(&images, false, None)?, 300 + seed)?;
        let vars = varmap.data().lock().unwrap();
        for (((path, _), sum), &centred) in layers.iter().zip(measured.iter_mut()).zip(&centred) {
            let name = format!("{path}.weight");
            // Over the weights the layer multiplies by: centred rows lose their mean.
            let used = if centred {
                let weight = vars[&name].as_tensor();
                second_moment(weight)? / row_centred_second_moment(weight)?
            } else {
                1.0
            };
            *sum += ratios[&name] * used / args.gammas as f64;
        }
    }
    println!("\n{title}: {} inits x {} samples in {:.1?}", args.gammas, args.batch, start.elapsed());
    for ((path, predicted), measured) in layers.iter().zip(&measured) {
        println!("  {path:<28} measured {measured:.3e}  predicted {predicted:.3e}  ratio {:.3}", measured / predicted);
    }
    let (max, min) = measured.iter().fold((0.0f64, f64::INFINITY), |(hi, lo), &m| (hi.max(m), lo.min(m)));
    let ratios: Vec<f64> = layers.iter().zip(&measured).map(|((_, p), m)| m / p).collect();
    let (rmax, rmin) = ratios.iter().fold((0.0f64, f64::INFINITY), |(hi, lo), &r| (hi.max(r), lo.min(r)));
    println!("  measured gamma max/min {:.2}; measured/predicted from {rmin:.3} to {rmax:.3}", max / min);
    Ok(())
}

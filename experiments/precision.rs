//! `scalenet-experiments precision`: the calculus's static f16 loss scale, measured.
//!
//! For the digits LeNet and the strided digits ResNet of the examples, at initialization, on
//! white-noise batches with uniformly random labels (what the calculus's moments assume), over
//! `--seeds` initializations:
//!
//! - every top-level step's output, the gradient reaching it and its weight gradient, measured in
//!   f16 with the loss multiplied by the calculus's scale, against the [`ScalePlan`]'s prediction
//!   (mean square pooled over the seeds, then the root; the standard error of the ratio is the
//!   jackknife's over seeds);
//! - the fraction of weight-gradient entries that are exactly zero: the generated network in f32,
//!   in f16 at the calculus's scale, and in f16 unscaled; and the same architecture written with
//!   candle-nn's layers and init (no fixed scalars, as a user writes it), in f32 and in f16
//!   unscaled. Zeros in f32 are the structural ones (ReLU); what f16 adds is underflow.
//!
//! - the same zero fractions after training (the examples' schedule: SGD at 0.1, 8 epochs, batches of
//!   32 on the bundled digits, in f32), on the first training batches: the loss, and with it every
//!   gradient, is then an order of magnitude smaller than at initialization, which is where f16
//!   without a scale loses gradients.
//!
//! Writes `precision.md` under `--out` and prints it.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use fixtures::candle_nn_net::{candle_nn_layers, forward};
use fixtures::networks::{DigitsLeNet, DigitsResNet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scalenet::calculus::precision::{OutputGradient, ScalePlan, SignalKind};
use scalenet::calculus::{number, Format, Plan};
use scalenet::data::ImageDataset;
use scalenet::diagnostics::seeded_normal;
use scalenet::optim::{ParamsSgd, Sgd};
use scalenet::precision::{dtype, measure_signals, MeasuredStep};
use scalenet::Network;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PrecisionArgs {
    /// Where precision.md goes.
    #[arg(long)]
    out: PathBuf,
    /// Initializations (and batches) per network.
    #[arg(long, default_value_t = 16)]
    seeds: u64,
    /// Examples per batch (the examples train at 32).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Epochs of the training before the trained networks' zeros are counted (0 leaves that
    /// table out).
    #[arg(long, default_value_t = 8)]
    trained_epochs: u64,
}

pub fn run(args: PrecisionArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    crate::output_folder("--out", &args.out)?;
    let mut text = String::new();
    writeln!(
        text,
        "# f16 at the calculus's loss scale, measured\n\n`scalenet-experiments precision --seeds {} --batch-size {}`: \
         white-noise batches of {} with uniformly random labels, softmax cross-entropy averaged over the batch, \
         {} initializations per network. Measured = root of the mean square pooled over the initializations; ± = \
         jackknife standard error of the ratio over initializations.\n",
        args.seeds, args.batch_size, args.batch_size, args.seeds
    )?;
    let mut zeros = String::new();
    writeln!(
        zeros,
        "## Weight-gradient entries that are exactly zero\n\nOver all weight entries of the network, mean over the \
         initializations. f32 zeros are structural (ReLU); the rest in f16 is underflow; `not finite`: a \
         gradient overflowed. candle-nn = the same \
         architecture in candle-nn's layers with its default init, without the calculus's fixed scalars (as a user \
         writes it), trained without loss scaling.\n\n| network | scalenet f32 | scalenet f16, scale 2^k | scalenet f16, \
         unscaled | candle-nn f32 | candle-nn f16, unscaled |\n|---|---|---|---|---|---|"
    )?;
    compare::<DigitsLeNet>("digits LeNet", &args, &mut text, &mut zeros)?;
    compare::<DigitsResNet>("digits strided ResNet", &args, &mut text, &mut zeros)?;
    text.push_str(&zeros);
    if args.trained_epochs > 0 {
        trained_tables(&args, &mut text)?;
    }
    crate::write_atomically(&args.out.join("precision.md"), &text)?;
    print!("{text}");
    Ok(())
}

fn trained_tables(args: &PrecisionArgs, text: &mut String) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    writeln!(
        text,
        "\n## The same after training\n\nTrained in f32 (SGD at 0.1, {} epochs of 1500 digits in batches of 32, seed 0), \
         then the gradients of the first {TRAINED_BATCHES} training batches in each type; the scale is the calculus's \
         static one, as at initialization. candle-nn's network trained the same way from its own init.\n\n| network | \
         loss | scalenet f32 | scalenet f16, scale 2^k | scalenet f16, unscaled | candle-nn loss | candle-nn f32 | \
         candle-nn f16, unscaled |\n|---|---|---|---|---|---|---|---|",
        args.trained_epochs
    )?;
    trained::<DigitsLeNet>("digits LeNet", 4, args, text)?;
    trained::<DigitsResNet>("digits strided ResNet", 2, args, text)
}

/// Training batches whose gradients the trained networks are measured on.
const TRAINED_BATCHES: usize = 8;

/// The bundled digits, standardized, upsampled by `factor`, shuffled: the examples' first 1500.
fn digits(factor: usize) -> Result<ImageDataset, Box<dyn std::error::Error + Send + Sync>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.safetensors");
    Ok(ImageDataset::from_safetensors(path)?.standardized()?.upsampled(factor)?.shuffled(0)?.split(1500)?.0)
}

/// `epochs` of SGD at 0.1 in batches of 32, the examples' schedule, through `step`; the last
/// epoch's mean loss.
fn train(
    data: &ImageDataset,
    epochs: u64,
    mut step: impl FnMut(&Tensor, &Tensor) -> candle_core::Result<f64>,
) -> candle_core::Result<f64> {
    let mut last = f64::NAN;
    for epoch in 1..=epochs {
        let (mut total, mut steps) = (0.0, 0);
        for batch in data.shuffled(epoch)?.batches(32) {
            let (images, labels) = batch?;
            total += step(&images, &labels)?;
            steps += 1;
        }
        last = total / steps as f64;
    }
    Ok(last)
}

/// `varmap`'s variables rounded to `format`, in a new map under the same names.
fn rounded(varmap: &VarMap, format: Format) -> candle_core::Result<VarMap> {
    let copy = VarMap::new();
    for (name, var) in varmap.data().lock().expect("varmap lock poisoned").iter() {
        let value = candle_core::Var::from_tensor(&var.as_tensor().to_dtype(dtype(format))?)?;
        copy.data().lock().expect("varmap lock poisoned").insert(name.clone(), value);
    }
    Ok(copy)
}

/// Zero fractions of the weight gradients of `N` trained in f32, then measured in f32, in f16 at
/// the calculus's scale and in f16 unscaled; the same for candle-nn's network, unscaled.
fn trained<N: Network>(
    name: &str,
    factor: usize,
    args: &PrecisionArgs,
    text: &mut String,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let plan = N::plan();
    let data = digits(factor)?;
    let varmap = VarMap::new();
    let net = N::new_seeded(&varmap, DType::F32, &Device::Cpu, 0)?;
    let mut sgd = Sgd::new(varmap.all_vars(), ParamsSgd::new(0.1))?;
    let loss = train(&data, args.trained_epochs, |images, labels| {
        let loss = candle_nn::loss::cross_entropy(&net.forward_hooked(images, true, None)?, labels)?;
        sgd.backward_step(&loss)?;
        loss.to_scalar::<f32>().map(f64::from)
    })?;
    let gradient = OutputGradient::cross_entropy(plan.output.channels(), args.batch_size);
    let scale = ScalePlan::new(plan, Format::F16, gradient).loss_scale;
    let half = VarMap::new();
    let half_net = N::new_seeded(&half, DType::F16, &Device::Cpu, 0)?;
    {
        let trained = varmap.data().lock().expect("varmap lock poisoned");
        for (name, var) in half.data().lock().expect("varmap lock poisoned").iter() {
            var.set(&trained[name].as_tensor().to_dtype(DType::F16)?)?;
        }
    }
    let mut fractions = [0.0; 3];
    for batch in data.batches(32).take(TRAINED_BATCHES) {
        let (images, labels) = batch?;
        let half_images = images.to_dtype(DType::F16)?;
        fractions[0] += step_zeros(plan, &measure_signals(&net, &varmap, &images, &labels, 1.0)?);
        fractions[1] += step_zeros(plan, &measure_signals(&half_net, &half, &half_images, &labels, scale)?);
        fractions[2] += step_zeros(plan, &measure_signals(&half_net, &half, &half_images, &labels, 1.0)?);
    }
    // candle-nn's network, trained the same way from its own init.
    let candle_map = VarMap::new();
    let layers =
        candle_nn_layers(&plan.steps, &VarBuilder::from_varmap(&candle_map, DType::F32, &Device::Cpu), "", false)?;
    let mut candle_sgd = Sgd::new(candle_map.all_vars(), ParamsSgd::new(0.1))?;
    let candle_loss = train(&data, args.trained_epochs, |images, labels| {
        let loss = candle_nn::loss::cross_entropy(&forward(&layers, images)?, labels)?;
        candle_sgd.backward_step(&loss)?;
        loss.to_scalar::<f32>().map(f64::from)
    })?;
    let candle_half = rounded(&candle_map, Format::F16)?;
    let half_layers =
        candle_nn_layers(&plan.steps, &VarBuilder::from_varmap(&candle_half, DType::F16, &Device::Cpu), "", false)?;
    let mut candle_fractions = [0.0; 2];
    for batch in data.batches(32).take(TRAINED_BATCHES) {
        let (images, labels) = batch?;
        for (fraction, (map, layers, format)) in candle_fractions
            .iter_mut()
            .zip([(&candle_map, &layers, Format::F32), (&candle_half, &half_layers, Format::F16)])
        {
            let logits = forward(layers, &images.to_dtype(dtype(format))?)?.to_dtype(DType::F32)?;
            let grads = candle_nn::loss::cross_entropy(&logits, &labels)?.backward()?;
            *fraction += zero_fraction_of_weights(map, &grads)?;
        }
    }
    let n = TRAINED_BATCHES as f64;
    writeln!(
        text,
        "| {name} | {loss:.4} | {} | {} (k = {}) | {} | {candle_loss:.4} | {} | {} |",
        percent(fractions[0] / n),
        percent(fractions[1] / n),
        scale.log2(),
        percent(fractions[2] / n),
        percent(candle_fractions[0] / n),
        percent(candle_fractions[1] / n),
    )?;
    Ok(())
}

/// A white-noise batch of `batch` inputs for `plan` and uniformly random labels, from `seed`.
fn batch(plan: &Plan, batch: usize, seed: u64) -> candle_core::Result<(Tensor, Tensor)> {
    let mut dims = vec![batch];
    dims.extend(plan.input.dims());
    let input = seeded_normal(&Tensor::zeros(dims, DType::F32, &Device::Cpu)?, seed)?;
    let classes = plan.output.channels() as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let labels: Vec<u32> = (0..batch).map(|_| rng.random_range(0..classes)).collect();
    Ok((input, Tensor::new(labels, &Device::Cpu)?))
}

/// The generated network `N` in `format` from `seed`, measured on the seed's batch at `scale`.
fn measured<N: Network>(
    format: Format,
    seed: u64,
    args: &PrecisionArgs,
    scale: f64,
) -> candle_core::Result<Vec<MeasuredStep>> {
    let varmap = VarMap::new();
    let net = N::new_seeded(&varmap, dtype(format), &Device::Cpu, seed)?;
    let (input, labels) = batch(N::plan(), args.batch_size, seed)?;
    measure_signals(&net, &varmap, &input.to_dtype(dtype(format))?, &labels, scale)
}

/// The fraction of exactly-zero entries over every weight's gradient in `grads`; NaN when any
/// entry is not finite (an overflow: the gradient is lost whole, not in part).
fn zero_fraction_of_weights(varmap: &VarMap, grads: &candle_core::backprop::GradStore) -> candle_core::Result<f64> {
    let (mut zeros, mut entries) = (0.0, 0.0);
    for (name, var) in varmap.data().lock().expect("varmap lock poisoned").iter() {
        if !name.ends_with("weight") {
            continue;
        }
        if let Some(grad) = grads.get(var.as_tensor()) {
            let grad = grad.to_dtype(DType::F64)?;
            if !grad.abs()?.sum_all()?.to_scalar::<f64>()?.is_finite() {
                return Ok(f64::NAN);
            }
            zeros += grad.eq(0.0)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
            entries += grad.elem_count() as f64;
        }
    }
    Ok(zeros / entries.max(1.0))
}

/// A percentage, or "not finite" for an overflowed gradient.
fn percent(fraction: f64) -> String {
    if fraction.is_finite() {
        format!("{:.2}%", 100.0 * fraction)
    } else {
        "not finite".to_string()
    }
}

/// The zero fraction of the weight gradients of `N`'s architecture in candle-nn's layers (its
/// init, no fixed scalars), in `format`, unscaled.
fn candle_nn_zeros<N: Network>(format: Format, seed: u64, args: &PrecisionArgs) -> candle_core::Result<f64> {
    let plan = N::plan();
    let full = VarMap::new();
    let layers = candle_nn_layers(&plan.steps, &VarBuilder::from_varmap(&full, DType::F32, &Device::Cpu), "", false)?;
    // The same weights rounded: candle-nn's init draws in the VarMap's type.
    let (varmap, layers) = match format {
        Format::F32 => (full, layers),
        format => {
            let varmap = rounded(&full, format)?;
            let vb = VarBuilder::from_varmap(&varmap, dtype(format), &Device::Cpu);
            let layers = candle_nn_layers(&plan.steps, &vb, "", false)?;
            (varmap, layers)
        }
    };
    let (input, labels) = batch(plan, args.batch_size, seed)?;
    let logits = forward(&layers, &input.to_dtype(dtype(format))?)?.to_dtype(DType::F32)?;
    let grads = candle_nn::loss::cross_entropy(&logits, &labels)?.backward()?;
    zero_fraction_of_weights(&varmap, &grads)
}

/// The weighted zero fraction of the weight gradients in measured steps.
fn step_zeros(plan: &Plan, steps: &[MeasuredStep]) -> f64 {
    let (mut zeros, mut entries) = (0.0, 0.0);
    for (step, measured) in plan.steps.iter().zip(steps) {
        if measured.weight_gradient.is_some_and(|g| !g.is_finite()) {
            return f64::NAN;
        }
        if let (Some(weight), Some(fraction)) = (step.weight(), measured.weight_gradient_zeros) {
            let count = weight.shape.iter().product::<usize>() as f64;
            zeros += fraction * count;
            entries += count;
        }
    }
    zeros / entries.max(1.0)
}

/// Which measured value a column shows.
type Pick = fn(&MeasuredStep) -> Option<f64>;

/// The ratio of pooled root mean squares and its jackknife standard error over the seeds.
fn ratio(measured: &[f64], predicted: f64) -> (f64, f64) {
    let n = measured.len() as f64;
    let pooled = |values: &mut dyn Iterator<Item = f64>| -> f64 {
        let values: Vec<f64> = values.collect();
        (values.iter().map(|v| v * v).sum::<f64>() / values.len() as f64).sqrt() / predicted
    };
    let all = pooled(&mut measured.iter().copied());
    let left_out: Vec<f64> = (0..measured.len())
        .map(|i| pooled(&mut measured.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, v)| *v)))
        .collect();
    let mean = left_out.iter().sum::<f64>() / n;
    let error = ((n - 1.0) / n * left_out.iter().map(|v| (v - mean).powi(2)).sum::<f64>()).sqrt();
    (all, error)
}

fn compare<N: Network>(
    name: &str,
    args: &PrecisionArgs,
    text: &mut String,
    zeros: &mut String,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let plan = N::plan();
    let gradient = OutputGradient::cross_entropy(plan.output.channels(), args.batch_size);
    let scales = ScalePlan::new(plan, Format::F16, gradient);
    let scale = scales.loss_scale;
    let mut runs = Vec::new();
    let mut zero_rows = [0.0; 5];
    for seed in 0..args.seeds {
        let f16 = measured::<N>(Format::F16, seed, args, scale)?;
        // A power-of-two scale is exact in f32: its zeros are those of the unscaled loss.
        let f32 = measured::<N>(Format::F32, seed, args, scale)?;
        let f16_unscaled = measured::<N>(Format::F16, seed, args, 1.0)?;
        zero_rows[0] += step_zeros(plan, &f32);
        zero_rows[1] += step_zeros(plan, &f16);
        zero_rows[2] += step_zeros(plan, &f16_unscaled);
        zero_rows[3] += candle_nn_zeros::<N>(Format::F32, seed, args)?;
        zero_rows[4] += candle_nn_zeros::<N>(Format::F16, seed, args)?;
        runs.push((f16, f32));
    }
    writeln!(
        text,
        "## {name}: loss scale 2^{}\n\n| step | op | x predicted | measured / predicted | f16 / f32 | dx predicted | \
         measured / predicted | f16 / f32 | dW predicted | measured / predicted | f16 / f32 |\n|---|---|---|---|---|---|---|---|---|---|---|",
        scale.log2()
    )?;
    let mut worst: f64 = 0.0;
    for (index, step) in plan.steps.iter().enumerate() {
        let predicted = |kind: SignalKind| {
            scales.signals.iter().find(|s| std::ptr::eq(s.signal.at.step, step) && s.signal.kind == kind).map(|s| s.std)
        };
        let mut cells = vec![if step.name.is_empty() { "·".to_string() } else { step.name.clone() }];
        cells.push(scalenet::calculus::precision::describe_step(step));
        let columns: [(SignalKind, Pick); 3] = [
            (SignalKind::Forward, |m| Some(m.output)),
            (SignalKind::Backward, |m| Some(m.gradient)),
            (SignalKind::WeightGradient, |m| m.weight_gradient),
        ];
        for (kind, pick) in columns {
            let half = runs.iter().map(|(f16, _)| pick(&f16[index])).collect::<Option<Vec<f64>>>();
            let full = runs.iter().map(|(_, f32)| pick(&f32[index])).collect::<Option<Vec<f64>>>();
            match (predicted(kind), half, full) {
                (Some(predicted), Some(half), Some(full)) => {
                    let (r, error) = ratio(&half, predicted);
                    worst = worst.max((r - 1.0).abs());
                    let pooled = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
                    cells.push(number(predicted));
                    cells.push(format!("{r:.3} ± {error:.3}"));
                    cells.push(format!("{:.4}", pooled(&half) / pooled(&full)));
                }
                _ => cells.extend(["".to_string(), "".to_string(), "".to_string()]),
            }
        }
        writeln!(text, "| {} |", cells.join(" | "))?;
    }
    writeln!(text, "\nLargest deviation of a measured / predicted ratio from 1: {:.1}%.\n", 100.0 * worst)?;
    let n = args.seeds as f64;
    writeln!(
        zeros,
        "| {name} | {} | {} (k = {}) | {} | {} | {} |",
        percent(zero_rows[0] / n),
        percent(zero_rows[1] / n),
        scale.log2(),
        percent(zero_rows[2] / n),
        percent(zero_rows[3] / n),
        percent(zero_rows[4] / n),
    )?;
    Ok(())
}

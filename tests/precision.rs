//! Mixed precision (`scalenet::precision`): half networks trained with f32 masters and the loss
//! scale the calculus chooses, against the same network in f32.

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarMap};
use scalenet::calculus::precision::{OutputGradient, ScalePlan};
use scalenet::calculus::Format;
use scalenet::checkpoint::{load_checkpoint, save_atomically};
use scalenet::diagnostics::seeded_normal;
use scalenet::finite::TrainingError;
use scalenet::network;
use scalenet::optim::{ParamsSgd, Sgd};
use scalenet::precision::{dtype, measure_signals, LossScaler, MixedPrecision, StepOutcome};

network! {
    /// A small conv net with every op the examples use: padded and strided convolutions, pooling,
    /// a linear head.
    pub struct Small {
        input: [2, 8, 8],
        conv1: conv(8, kernel = 3, padding = 1),
        relu,
        avg_pool(2),
        conv2: conv(16, kernel = 2, stride = 2),
        relu,
        flatten,
        fc: linear(5),
    }
}

const BATCH: usize = 16;

fn batch(seed: u64) -> candle_core::Result<(Tensor, Tensor)> {
    let input = seeded_normal(&Tensor::zeros((BATCH, 2, 8, 8), DType::F32, &Device::Cpu)?, seed)?;
    let labels: Vec<u32> = (0..BATCH as u32).map(|i| (i * 7 + seed as u32) % 5).collect();
    Ok((input, Tensor::new(labels, &Device::Cpu)?))
}

fn scaler(format: Format) -> LossScaler {
    LossScaler::for_plan(Small::plan(), format, OutputGradient::cross_entropy(5, BATCH))
}

fn loss(net: &Small, input: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let logits = net.forward_t(&input.to_dtype(net.output_calibration.dtype())?, true)?.to_dtype(DType::F32)?;
    candle_nn::loss::cross_entropy(&logits, labels)
}

fn weights(varmap: &VarMap) -> candle_core::Result<Vec<(String, Vec<f32>)>> {
    let data = varmap.data().lock().unwrap();
    let mut all: Vec<(String, Vec<f32>)> = data
        .iter()
        .map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)))
        .collect::<candle_core::Result<_>>()?;
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(all)
}

/// `||a - b|| / ||b||` over every value.
fn relative_difference(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f64 {
    let (mut difference, mut norm) = (0.0, 0.0);
    for ((_, a), (_, b)) in a.iter().zip(b) {
        for (x, y) in a.iter().zip(b) {
            difference += ((x - y) as f64).powi(2);
            norm += (*y as f64).powi(2);
        }
    }
    (difference / norm).sqrt()
}

/// The update a step makes: after minus before.
fn update(before: &[(String, Vec<f32>)], after: &[(String, Vec<f32>)]) -> Vec<(String, Vec<f32>)> {
    before
        .iter()
        .zip(after)
        .map(|((n, b), (_, a))| (n.clone(), a.iter().zip(b).map(|(a, b)| a - b).collect()))
        .collect()
}

/// One step in f32, and in a half type with masters starting from the f32 weights rounded; the
/// relative difference of the updates.
fn update_difference(format: Format, seed: u64) -> candle_core::Result<f64> {
    let full = VarMap::new();
    let net = Small::new_seeded(&full, DType::F32, &Device::Cpu, seed)?;
    let half = VarMap::new();
    let half_net = Small::new_seeded(&half, dtype(format), &Device::Cpu, seed)?;
    // Both start from the same values: the f32 network's weights rounded to the half type.
    for (name, var) in full.data().lock().unwrap().iter() {
        var.set(&var.as_tensor().to_dtype(dtype(format))?.to_dtype(DType::F32)?)?;
        half.data().lock().unwrap()[name].set(&var.as_tensor().to_dtype(dtype(format))?)?;
    }
    let start = weights(&full)?;
    let mut sgd = <Sgd as candle_nn::Optimizer>::new(full.all_vars(), ParamsSgd::new(0.1))?;
    let mut mixed = MixedPrecision::<Sgd>::new(&half, scaler(format), ParamsSgd::new(0.1))?;
    let (input, labels) = batch(seed)?;
    // Both see the input the half network does.
    let input = input.to_dtype(dtype(format))?.to_dtype(DType::F32)?;
    candle_nn::Optimizer::backward_step(&mut sgd, &loss(&net, &input, &labels)?)?;
    let outcome = mixed.backward_step(&loss(&half_net, &input, &labels)?).unwrap();
    assert!(outcome.applied(), "{format}: seed {seed} skipped at the calculus's scale");
    Ok(relative_difference(&update(&start, &weights(mixed.masters())?), &update(&start, &weights(&full)?)))
}

#[test]
fn half_precision_steps_follow_f32_steps() -> candle_core::Result<()> {
    // One step from 16 initializations; the median relative difference of the update. Rounding to
    // a 10-bit (f16) or 7-bit (bf16) mantissa moves it by about 7e-4 or 1e-2 (a ReLU that flips
    // for one example gives a few initializations 2-10%, hence the median). A gradient off by 2%
    // (a wrong unscaling) moves every update by 2e-2, and one off by its scale (2^12) or a master
    // written from the wrong copy by far more.
    let median = |format| -> candle_core::Result<f64> {
        let mut differences =
            (0..16).map(|seed| update_difference(format, seed)).collect::<candle_core::Result<Vec<f64>>>()?;
        differences.sort_by(f64::total_cmp);
        Ok((differences[7] + differences[8]) / 2.0)
    };
    let (f16, bf16) = (median(Format::F16)?, median(Format::Bf16)?);
    println!(
        "median relative difference of the update from f32's over 16 initializations: f16 {f16:.2e}, bf16 {bf16:.2e}"
    );
    assert!(f16 < 3e-3, "f16 {f16}");
    assert!(bf16 < 3e-2, "bf16 {bf16}");
    Ok(())
}

#[test]
fn the_network_computes_with_its_masters_rounded() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = Small::new_seeded(&varmap, DType::F16, &Device::Cpu, 0)?;
    let mut mixed = MixedPrecision::<Sgd>::new(&varmap, scaler(Format::F16), ParamsSgd::new(0.1))?;
    let (input, labels) = batch(0)?;
    mixed.backward_step(&loss(&net, &input, &labels)?).unwrap();
    for ((name, model), (_, master)) in weights(&varmap)?.iter().zip(weights(mixed.masters())?) {
        let rounded: Vec<f32> =
            Tensor::new(master.as_slice(), &Device::Cpu)?.to_dtype(DType::F16)?.to_dtype(DType::F32)?.to_vec1()?;
        assert_eq!(model, &rounded, "{name}");
    }
    let master = mixed.masters().data().lock().unwrap()["conv1.weight"].clone();
    assert_eq!(master.dtype(), DType::F32);
    Ok(())
}

#[test]
fn overflowing_steps_are_skipped_and_halve_the_scale() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = Small::new_seeded(&varmap, DType::F16, &Device::Cpu, 0)?;
    // 2^40 overflows f16 (largest 65504) in the first gradient it scales.
    let mut mixed = MixedPrecision::<Sgd>::new(&varmap, LossScaler::new(2f64.powi(40)), ParamsSgd::new(0.1))?;
    let (input, labels) = batch(1)?;
    let before = weights(mixed.masters())?;
    let outcome = mixed.backward_step(&loss(&net, &input, &labels)?).unwrap();
    assert!(matches!(outcome, StepOutcome::Skipped { scale, .. } if scale == 2f64.powi(40)), "{outcome:?}");
    assert_eq!(weights(mixed.masters())?, before, "a skipped step changes nothing");
    assert_eq!(mixed.scaler().scale(), 2f64.powi(39));
    // It backs off until the gradients fit, then applies.
    let mut steps = 1;
    while !mixed.backward_step(&loss(&net, &input, &labels)?).unwrap().applied() {
        steps += 1;
        assert!(steps < 40, "never applied");
    }
    assert_eq!(mixed.scaler().skipped(), steps);
    assert_ne!(weights(mixed.masters())?, before);
    // The calculus's own scale is far below: nothing skipped from there.
    let static_scale = ScalePlan::new(Small::plan(), Format::F16, OutputGradient::cross_entropy(5, BATCH)).loss_scale;
    assert!(mixed.scaler().scale() > static_scale, "{} {static_scale}", mixed.scaler().scale());
    Ok(())
}

#[test]
fn a_non_finite_loss_is_an_error_not_a_skip() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    Small::new_seeded(&varmap, DType::F16, &Device::Cpu, 0)?;
    let mut mixed = MixedPrecision::<Sgd>::new(&varmap, scaler(Format::F16), ParamsSgd::new(0.1))?;
    let error = mixed.backward_step(&Tensor::new(f32::INFINITY, &Device::Cpu)?).unwrap_err();
    assert!(matches!(error, TrainingError::NonFiniteLoss { step: 0, .. }), "{error}");
    Ok(())
}

#[test]
fn checkpoints_hold_the_f32_masters() -> Result<(), Box<dyn std::error::Error>> {
    let varmap = VarMap::new();
    let net = Small::new_seeded(&varmap, DType::BF16, &Device::Cpu, 0)?;
    let mut mixed = MixedPrecision::<Sgd>::new(&varmap, scaler(Format::Bf16), ParamsSgd::new(0.1))?;
    let (input, labels) = batch(2)?;
    mixed.backward_step(&loss(&net, &input, &labels)?).unwrap();
    let folder = tempfile::Builder::new().prefix("scalenet-precision-").tempdir()?;
    let dir = folder.path();
    let path = dir.join("masters.safetensors");
    save_atomically(mixed.masters(), &path)?;
    // A fresh network and trainer, its masters loaded and copied into the bf16 weights.
    let restored = VarMap::new();
    Small::new_seeded(&restored, DType::BF16, &Device::Cpu, 9)?;
    let resumed = MixedPrecision::<Sgd>::new(&restored, scaler(Format::Bf16), ParamsSgd::new(0.1))?;
    load_checkpoint(resumed.masters(), &path)?;
    resumed.copy_masters_to_model()?;
    assert_eq!(weights(resumed.masters())?, weights(mixed.masters())?);
    assert_eq!(weights(&restored)?, weights(&varmap)?);
    Ok(())
}

#[test]
fn at_the_calculus_scale_f16_signals_are_f32_signals() -> candle_core::Result<()> {
    // Every step's output, backward signal and weight gradient, measured in f16 at the static
    // scale, against the same network in f32: rounding only (10-bit mantissa), no signal lost.
    let scale = ScalePlan::new(Small::plan(), Format::F16, OutputGradient::cross_entropy(5, BATCH)).loss_scale;
    for seed in 0..4 {
        let (input, labels) = batch(seed)?;
        let full = VarMap::new();
        let net = Small::new_seeded(&full, DType::F32, &Device::Cpu, seed)?;
        let half = VarMap::new();
        let half_net = Small::new_seeded(&half, DType::F16, &Device::Cpu, seed)?;
        let f32 = measure_signals(&net, &full, &input, &labels, scale)?;
        let f16 = measure_signals(&half_net, &half, &input.to_dtype(DType::F16)?, &labels, scale)?;
        for (step, (a, b)) in f16.iter().zip(&f32).enumerate() {
            for (what, x, y) in [("output", a.output, b.output), ("gradient", a.gradient, b.gradient)]
                .into_iter()
                .chain(a.weight_gradient.zip(b.weight_gradient).map(|(x, y)| ("weight gradient", x, y)))
            {
                assert!((x / y - 1.0).abs() < 0.01, "seed {seed} step {step} {what}: f16 {x} f32 {y}");
            }
        }
    }
    Ok(())
}

#[test]
fn widened_half_ops_round_the_f32_result() -> candle_core::Result<()> {
    let xs = seeded_normal(&Tensor::zeros((4, 3, 9, 9), DType::F32, &Device::Cpu)?, 1)?;
    let kernel = (seeded_normal(&Tensor::zeros((5, 3, 3, 3), DType::F32, &Device::Cpu)?, 2)? * 0.2)?;
    for dtype in [DType::F16, DType::BF16] {
        // The f32 result from the half inputs, rounded once, is what the half op returns.
        let (xs, kernel) = (xs.to_dtype(dtype)?, kernel.to_dtype(dtype)?);
        let wide =
            scalenet::ops::conv2d_scaled(&xs.to_dtype(DType::F32)?, &kernel.to_dtype(DType::F32)?, None, 1, 1, 0.5)?;
        let half = scalenet::ops::conv2d_scaled(&xs, &kernel, None, 1, 1, 0.5)?;
        assert_eq!(half.dtype(), dtype);
        let expected: Vec<f32> = wide.to_dtype(dtype)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        assert_eq!(half.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?, expected, "{dtype:?}");
    }
    Ok(())
}

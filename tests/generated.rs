//! Run-time tests of generated networks: the measured moments match the calculus.
//!
//! Sampling error: the mean of `w^2` over `N` i.i.d. normal weights has relative standard
//! deviation `sqrt(2/N)`; checks allow 5 of those. Realized network moments vary by
//! O(1/sqrt(width)) between initializations, so those checks average over several seeds.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use fixtures::networks::{Mlp, MlpFanInScaled, PooledLeNet};
use scalenet::diagnostics::{second_moment, seeded_normal, weight_second_moments, weight_to_gradient_ratios};
use scalenet::network;

network! {
    /// Every other layer kind, with dropout (so only ModuleT).
    struct Everything {
        input: [2, 8, 8],
        conv(4, kernel = 2, stride = 2, bias = false),
        leaky_relu(0.1),
        b: bias,
        u: scalar,
        scale(2.0),
        dropout(0.25),
        #[allow(unscaled)]
        tanh,
        flatten,
        linear(3),
    }
}

network! {
    /// A conv net with a global-average-pool head (pools whatever spatial size reaches it).
    #[allow(deprecated)] // the global-pool head the calculus warns about, on purpose
    pub struct GlobalPooled {
        input: [3, 8, 8],
        conv1: conv(16, kernel = 3, padding = 1),
        relu,
        conv2: conv(16, kernel = 3, padding = 1),
        relu,
        global_avg_pool,
        fc: linear(10),
    }
}

fn normal_input(dims: &[usize], batch: usize, seed: u64) -> candle_core::Result<Tensor> {
    let mut shape = vec![batch];
    shape.extend_from_slice(dims);
    seeded_normal(&Tensor::zeros(shape, DType::F32, &Device::Cpu)?, seed)
}

#[test]
fn shapes_and_constants() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = PooledLeNet::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    assert_eq!(PooledLeNet::INPUT_SHAPE, [3, 32, 32]);
    assert_eq!(PooledLeNet::OUTPUT_SHAPE, [10]);
    let logits = net.forward_t(&normal_input(&PooledLeNet::INPUT_SHAPE, 4, 0)?, true)?;
    assert_eq!(logits.dims(), [4, 10]);
    let vars = varmap.data().lock().unwrap();
    for name in ["conv1.weight", "conv1.bias", "conv2.weight", "fc1.weight", "fc3.bias"] {
        assert!(vars.contains_key(name), "{name} missing");
    }
    assert_eq!(vars["conv1.weight"].dims(), [6, 3, 5, 5]);
    assert_eq!(vars["fc1.weight"].dims(), [120, 576]);
    Ok(())
}

#[test]
fn wrong_input_shape_is_a_typed_error_naming_the_network() -> candle_core::Result<()> {
    let net = Mlp::new_seeded(&VarMap::new(), DType::F32, &Device::Cpu, 0)?;
    let error = net.forward(&Tensor::zeros((2, 783), DType::F32, &Device::Cpu)?).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("Mlp takes a batch of shape [batch, 784]"), "{message}");
    assert!(message.contains("783"), "{message}");
    Ok(())
}

#[test]
fn every_layer_kind_runs_and_dropout_only_in_training() -> candle_core::Result<()> {
    let varmap = VarMap::new();
    let net = Everything::new_seeded(&varmap, DType::F32, &Device::Cpu, 3)?;
    let xs = normal_input(&Everything::INPUT_SHAPE, 5, 1)?;
    let eval_a = net.forward_t(&xs, false)?.to_vec2::<f32>()?;
    let eval_b = net.forward_t(&xs, false)?.to_vec2::<f32>()?;
    assert_eq!(eval_a, eval_b);
    assert_eq!(net.forward_t(&xs, true)?.dims(), [5, 3]);
    let vars = varmap.data().lock().unwrap();
    for name in ["conv_0.weight", "b.bias", "u.weight", "linear_8.weight"] {
        assert!(vars.contains_key(name), "{name} missing");
    }
    assert!(!vars.contains_key("conv_0.bias"), "bias = false");
    let report = Everything::report().to_string();
    assert!(report.contains("break the calculus"), "{report}");
    Ok(())
}

#[test]
fn seeded_init_is_reproducible() -> candle_core::Result<()> {
    let run = |seed| -> candle_core::Result<Vec<Vec<f32>>> {
        let net = PooledLeNet::new_seeded(&VarMap::new(), DType::F32, &Device::Cpu, seed)?;
        net.forward(&normal_input(&PooledLeNet::INPUT_SHAPE, 2, 9)?)?.to_vec2::<f32>()
    };
    assert_eq!(run(5)?, run(5)?);
    assert_ne!(run(5)?, run(6)?);
    Ok(())
}

/// Each weight tensor's E[W^2] equals the calculus's variance within 5 standard errors.
fn check_weight_moments(varmap: &VarMap, plan: &scalenet::calculus::Plan) -> candle_core::Result<()> {
    let measured = weight_second_moments(varmap)?;
    let mut checked = 0;
    for s in plan.weight_steps() {
        let weight = s.step.weight().unwrap();
        let count: usize = weight.shape.iter().product();
        let got = measured[&format!("{}.weight", s.path)];
        let tolerance = 5.0 * (2.0 / count as f64).sqrt();
        let relative = got / weight.second_moment - 1.0;
        assert!(
            relative.abs() < tolerance,
            "{}: measured {got}, formula {}, off by {relative:.3} > {tolerance:.3}",
            s.path,
            weight.second_moment
        );
        checked += 1;
    }
    assert!(checked >= 3);
    Ok(())
}

#[test]
fn measured_weight_moments_match_the_formula() -> candle_core::Result<()> {
    for seed in 0..3 {
        let varmap = VarMap::new();
        PooledLeNet::new_seeded(&varmap, DType::F32, &Device::Cpu, seed)?;
        check_weight_moments(&varmap, PooledLeNet::plan())?;
        let varmap = VarMap::new();
        Mlp::new_seeded(&varmap, DType::F32, &Device::Cpu, seed)?;
        check_weight_moments(&varmap, Mlp::plan())?;
    }
    // and through candle's own (unseeded) RNG with `new`
    let varmap = VarMap::new();
    PooledLeNet::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    check_weight_moments(&varmap, PooledLeNet::plan())
}

/// Section 7: on unit-normal input the output std is `output_std` (the default, 1), averaged over
/// 16 initializations (one varies by ~20%: realized moments move by O(1/sqrt(width))).
#[test]
fn mlp_output_std_matches_target_on_average() -> candle_core::Result<()> {
    let target = Mlp::plan().output_std;
    assert_eq!(target, scalenet::calculus::DEFAULT_OUTPUT_STD);
    let stds: Vec<f64> = (0..16)
        .map(|seed| {
            let net = Mlp::new_seeded(&VarMap::new(), DType::F32, &Device::Cpu, seed)?;
            let out = net.forward(&normal_input(&[784], 1024, 1000 + seed)?)?;
            Ok(second_moment(&out.broadcast_sub(&out.mean_all()?)?)?.sqrt())
        })
        .collect::<candle_core::Result<_>>()?;
    let mean = stds.iter().sum::<f64>() / stds.len() as f64;
    let sd = (stds.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (stds.len() - 1) as f64).sqrt();
    println!("output std over 16 inits: mean {mean:.4}, sd {sd:.4} (target {target})");
    assert!((mean / target - 1.0).abs() < 0.12, "mean output std {mean}");
    Ok(())
}

/// Mean over 8 initializations of each named layer's weight-to-gradient ratio.
fn mean_ratios(
    build: impl Fn(&VarMap, u64) -> candle_core::Result<Tensor>,
    names: &[&str],
) -> candle_core::Result<Vec<f64>> {
    let seeds = 8;
    let mut sums = vec![0.0; names.len()];
    for seed in 0..seeds {
        let varmap = VarMap::new();
        let output = build(&varmap, seed)?;
        let ratios = weight_to_gradient_ratios(&varmap, &output, 500 + seed)?;
        for (sum, name) in sums.iter_mut().zip(names) {
            *sum += ratios[&format!("{name}.weight")] / seeds as f64;
        }
    }
    Ok(sums)
}

fn spread(values: &[f64]) -> f64 {
    values.iter().cloned().fold(0.0, f64::max) / values.iter().cloned().fold(f64::INFINITY, f64::min)
}

/// Theorem 1: E[dW^2]/E[W^2] = gamma, which geometric init makes equal across layers; fan-in
/// spreads it by n_in/n_out ratios (about 3 on this MLP). Batch-size-1 semantics over 1024
/// samples, averaged over 8 initializations.
#[test]
fn mlp_weight_to_gradient_ratios_are_equal_for_geometric_not_fan_in() -> candle_core::Result<()> {
    let names = ["fc1", "fc2", "fc3"];
    let input = |seed| normal_input(&[784], 1024, seed);
    let geometric = mean_ratios(
        |varmap, seed| Mlp::new_seeded(varmap, DType::F32, &Device::Cpu, seed)?.forward(&input(seed)?),
        &names,
    )?;
    let fan_in = mean_ratios(
        |varmap, seed| MlpFanInScaled::new_seeded(varmap, DType::F32, &Device::Cpu, seed)?.forward(&input(seed)?),
        &names,
    )?;
    let predicted: Vec<f64> = Mlp::plan().weight_steps().map(|s| s.step.gamma.unwrap()).collect();
    let predicted_fan_in: Vec<f64> = MlpFanInScaled::plan().weight_steps().map(|s| s.step.gamma.unwrap()).collect();
    println!("geometric: measured {geometric:?}, predicted {predicted:?}, spread {:.3}", spread(&geometric));
    println!("fan_in:    measured {fan_in:?}, predicted {predicted_fan_in:?}, spread {:.3}", spread(&fan_in));
    assert!(spread(&geometric) < 1.3, "geometric spread {}", spread(&geometric));
    assert!(spread(&fan_in) > 2.0, "fan_in spread {}", spread(&fan_in));
    Ok(())
}

/// Forward second moments after every op of the strided PooledLeNet match the calculus within 25%
/// (32 initializations, 512 unit-normal samples each), pooling layers included: the calculus keeps
/// the mean and the per-channel offsets that average pooling cannot reduce. The seed-to-seed spread
/// is large in the narrow layers (each init draws only 16 channel offsets): 8 seeds gave ratios
/// from 0.70 to 1.03, 32 seeds from 1.00 to 1.21; the printed standard errors say how much.
#[test]
fn lenet_forward_moments_match_after_every_op() -> candle_core::Result<()> {
    let plan = PooledLeNet::plan();
    let seeds = 32;
    let mut per_seed = vec![Vec::new(); plan.steps.len()];
    for seed in 0..seeds {
        let net = PooledLeNet::new_seeded(&VarMap::new(), DType::F32, &Device::Cpu, seed)?;
        let outputs = net.forward_steps(&normal_input(&PooledLeNet::INPUT_SHAPE, 512, 2000 + seed)?, false)?;
        for (values, output) in per_seed.iter_mut().zip(&outputs) {
            values.push(second_moment(output)?);
        }
    }
    for (step, values) in plan.steps.iter().zip(&per_seed) {
        let measured = &(values.iter().sum::<f64>() / seeds as f64);
        let sd = (values.iter().map(|v| (v - measured).powi(2)).sum::<f64>() / (seeds - 1) as f64).sqrt();
        let standard_error = sd / (seeds as f64).sqrt() / measured;
        let predicted = step.forward.second;
        let op = match &step.op {
            scalenet::calculus::StepOp::Declared { op, .. } => op.keyword().to_string(),
            _ => "fixed".to_string(),
        };
        println!(
            "{op:<10} E[x^2] measured {measured:.4} (s.e. {:.1}%), predicted {predicted:.4}, ratio {:.3}",
            100.0 * standard_error,
            measured / predicted
        );
        assert!((measured / predicted - 1.0).abs() < 0.25, "{op}: {measured} vs {predicted}");
    }
    Ok(())
}

fn diagnose<N: scalenet::Network>(
    build: impl Fn(&VarMap, u64) -> candle_core::Result<N>,
    input_dims: &[usize],
    samples: usize,
    seeds: u64,
) -> candle_core::Result<scalenet::diagnostics::Diagnosis> {
    let all = (0..seeds)
        .map(|seed| {
            let varmap = VarMap::new();
            let net = build(&varmap, seed)?;
            scalenet::diagnostics::measure(&net, &varmap, &normal_input(input_dims, samples, 3000 + seed)?, 4000 + seed)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(scalenet::diagnostics::Diagnosis::mean(&all).expect("seeds > 0"))
}

/// Per-layer diagnostics against the calculus, with batch-size-1 semantics.
///
/// On the MLP (32 initializations x 128 samples) every weight layer's gamma is within 10% of the
/// prediction (measured 0.98-1.03, standard errors 0.02-0.03 between initializations), and the
/// weight gradient is what assumption 2 gives from the layer's own moments (`x~dy` 0.995-1.001):
/// a fully connected layer's per-sample gradient `dy xᵀ` has `|dW|² = |dy|² |x|²` exactly.
///
/// On the PooledLeNet with 2x2 average pooling the assumption fails, and the diagnostics say where:
/// pooling's backward pass copies one gradient over each window, so conv2's output gradient is
/// equal at neighbouring positions, whose overlapping patches share the (positive) mean of the
/// input: the cross terms that assumption 2 drops add up, and conv2's `x~dy` is about 2.5
/// (conv1's, 1.1). Printed and asserted, as the limit the README documents.
#[test]
fn diagnostics_match_the_calculus_where_its_assumptions_hold() -> candle_core::Result<()> {
    let mlp = diagnose(|v, s| Mlp::new_seeded(v, DType::F32, &Device::Cpu, s), &[784], 128, 32)?;
    let lenet =
        diagnose(|v, s| PooledLeNet::new_seeded(v, DType::F32, &Device::Cpu, s), &PooledLeNet::INPUT_SHAPE, 64, 8)?;
    println!("{mlp}\n{lenet}");
    for step in mlp.steps.iter().filter(|s| s.gamma.is_some()) {
        let ratio = step.gamma.unwrap().ratio();
        assert!((ratio - 1.0).abs() < 0.10, "mlp {}: gamma ratio {ratio}", step.layer);
        let correlation = step.gradient_correlation.unwrap();
        assert!((correlation - 1.0).abs() < 0.02, "mlp {}: x~dy {correlation}", step.layer);
    }
    let conv2 = lenet.steps.iter().find(|s| s.layer == "conv2").unwrap();
    assert!(conv2.gradient_correlation.unwrap() > 1.5, "pooled lenet conv2: x~dy {:?}", conv2.gradient_correlation);
    // JSON carries the same numbers.
    let json: serde_json::Value = serde_json::from_str(&mlp.to_json()).expect("valid json");
    assert_eq!(json["steps"][1]["layer"], "fc1");
    assert_eq!(json["steps"][1]["gamma"]["measured"].as_f64().unwrap(), mlp.steps[1].gamma.unwrap().measured);
    Ok(())
}

/// Section 7: calibrating the output on one batch sets its std to the target on fresh data; the
/// calibration is saved and loaded with the weights (safetensors) and no optimizer step moves it.
#[test]
fn output_calibration_is_kept_with_the_model_and_never_trained() -> candle_core::Result<()> {
    use candle_nn::Optimizer;
    let varmap = VarMap::new();
    let net = PooledLeNet::new_seeded(&varmap, DType::F32, &Device::Cpu, 11)?;
    let factor = net.calibrate_output(&varmap, &normal_input(&PooledLeNet::INPUT_SHAPE, 512, 1)?, 0.2)?;
    let fresh = normal_input(&PooledLeNet::INPUT_SHAPE, 512, 2)?;
    let std_of =
        |out: &Tensor| -> candle_core::Result<f64> { Ok(second_moment(&out.broadcast_sub(&out.mean_all()?)?)?.sqrt()) };
    let out = net.forward(&fresh)?;
    println!("calibration factor {factor:.4}, output std on fresh data {:.4} (target 0.2)", std_of(&out)?);
    assert!((std_of(&out)? / 0.2 - 1.0).abs() < 0.1);

    let mut sgd = candle_nn::SGD::new(varmap.all_vars(), 0.1)?;
    let loss = (net.forward(&fresh)? * seeded_normal(&out, 3)?)?.sum_all()?;
    sgd.backward_step(&loss)?;
    let calibration = net.output_calibration.to_scalar::<f32>()? as f64;
    assert!((calibration - factor).abs() < 1e-6, "trained: {calibration} vs {factor}");

    let folder = tempfile::Builder::new().prefix("scalenet-calibration-").tempdir()?;
    let dir = folder.path();
    let path = dir.join("lenet.safetensors");
    scalenet::checkpoint::save_atomically(&varmap, &path).map_err(candle_core::Error::wrap)?;
    let mut loaded = VarMap::new();
    let copy = PooledLeNet::new_seeded(&loaded, DType::F32, &Device::Cpu, 99)?;
    loaded.load(&path)?;
    assert_eq!(net.forward(&fresh)?.to_vec2::<f32>()?, copy.forward(&fresh)?.to_vec2::<f32>()?);
    Ok(())
}

/// `global_avg_pool` is each channel's mean over the image, `[B, C, H, W] -> [B, C]`, and the
/// forward moments follow the calculus after every step within 25% (128 initializations x 128
/// samples; measured 0.89 ± 0.04 to 1.06 ± 0.01; a model that forgot the channel offsets pooling
/// keeps would be off by a factor of about 20 after the pool).
///
/// Its gammas do not: pooling the whole image copies one gradient to all 64 positions, whose
/// post-ReLU inputs share their channel's mean, so conv2's weight gradient gains the cross terms
/// assumption 2 drops (`x~dy` about 11 over 8 initializations x 64 samples). That is the limit
/// the README documents for average pooling; the test asserts it so a fix shows up here.
#[test]
fn global_avg_pool_means_each_channel_and_keeps_the_moments_predicted() -> candle_core::Result<()> {
    let net = GlobalPooled::new_seeded(&VarMap::new(), DType::F64, &Device::Cpu, 0)?;
    let xs = normal_input(&GlobalPooled::INPUT_SHAPE, 4, 0)?.to_dtype(DType::F64)?;
    let steps = net.forward_steps(&xs, false)?;
    let plan = GlobalPooled::plan();
    let pool = plan.steps.iter().position(|s| s.op_keyword() == Some("global_avg_pool")).expect("a pool step");
    let expected = steps[pool - 1].flatten_from(2)?.mean(2)?;
    assert_eq!(steps[pool].dims(), [4, 16]);
    let difference = (&steps[pool] - &expected)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(difference < 1e-12, "{difference}");

    let seeds = 128;
    let mut per_step = vec![Vec::new(); plan.steps.len()];
    for seed in 0..seeds {
        let net = GlobalPooled::new_seeded(&VarMap::new(), DType::F32, &Device::Cpu, seed)?;
        let outputs = net.forward_steps(&normal_input(&GlobalPooled::INPUT_SHAPE, 128, 500 + seed)?, false)?;
        for (values, output) in per_step.iter_mut().zip(&outputs) {
            values.push(second_moment(output)?);
        }
    }
    for (step, values) in plan.steps.iter().zip(&per_step) {
        let ratios: Vec<f64> = values.iter().map(|v| v / step.forward.second).collect();
        let ratio = ratios.iter().sum::<f64>() / seeds as f64;
        let sd = (ratios.iter().map(|r| (r - ratio).powi(2)).sum::<f64>() / (seeds - 1) as f64).sqrt();
        let standard_error = sd / (seeds as f64).sqrt();
        let op = step.op_keyword().unwrap_or("fixed");
        println!("{op:<16} E[x^2] measured/predicted {ratio:.3} ± {standard_error:.3}");
        assert!((ratio - 1.0).abs() < 0.25, "{op}: {ratio} ± {standard_error}");
    }

    let diagnosis =
        diagnose(|v, s| GlobalPooled::new_seeded(v, DType::F32, &Device::Cpu, s), &GlobalPooled::INPUT_SHAPE, 64, 8)?;
    println!("{diagnosis}");
    let conv2 = diagnosis.steps.iter().find(|s| s.layer == "conv2").expect("conv2 is measured");
    assert!(conv2.gradient_correlation.unwrap() > 3.0, "conv2 x~dy {:?}", conv2.gradient_correlation);
    Ok(())
}

/// The plan a network recomputes at run time (`Net::plan()`, from `Net::spec()`) is the one the
/// macro baked its constants from: the same fingerprint for every network of the fixtures and of
/// this file (ResNet-50 and the wide conv net included).
#[test]
fn the_run_time_plan_is_the_compile_time_plan() {
    use fixtures::networks as n;
    macro_rules! same_plan {
        ($($net:ty),* $(,)?) => {$(
            assert_eq!(<$net>::plan().fingerprint(), <$net>::PLAN_FINGERPRINT, "{}", stringify!($net));
        )*};
    }
    same_plan!(
        Everything,
        GlobalPooled,
        n::PooledLeNet,
        n::DigitsLeNet,
        n::DigitsLeNetFanIn,
        n::DigitsLeNetIndependent,
        n::PooledLeNetIndependent,
        n::StridedLeNet,
        n::Mlp,
        n::MlpFanInScaled,
        n::StridedResNet,
        n::StridedResNetUnscaled,
        n::PooledResNet,
        n::PooledResNetUnscaled,
        n::PooledResNetIndependent,
        n::PooledResNetCentred,
        n::DigitsResNet,
        n::DigitsResNetCentred,
        n::DigitsResNetPooled,
        n::DigitsResNetPooledCentred,
        n::DigitsResNetPooledFlatHead,
        n::DigitsResNetPooledHead,
        n::WideConvNet,
        n::ResNet50,
        n::ResNet50Independent,
        n::ResNet50Centred,
    );
}

//! An ensemble of P copies trains each copy exactly as the copy trained alone: the paper's MLP
//! (784-384-64-10), two conv nets (one with flatten, one with a standalone bias, a learnable
//! scalar and global average pooling), grouped convolutions and two residual networks (strided
//! projection shortcuts; pooled shortcuts, a bottleneck and centred weights), four seeds, four
//! learning rates, each copy its own minibatch order, SGD with weight decay; losses agree within
//! 1e-5 relative over 20 steps (in f64).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use fixtures::networks::{GroupedConvNet, Mlp, PooledLeNet, PooledResNetCentred, StridedResNet};
use scalenet::diagnostics::seeded_normal;
use scalenet::ensemble::{Ensemble, EnsembleError, EnsembleSgd};
use scalenet::{network, Network};

network! {
    /// Convolutions (padded and strided), a standalone bias, a learnable scalar, average and
    /// global average pooling.
    #[allow(deprecated)] // the global-pool head the calculus warns about, on purpose
    pub struct ConvPool {
        input: [2, 8, 8],
        conv1: conv(4, kernel = 3, padding = 1),
        relu,
        bias,
        avg_pool(2),
        gain: scalar,
        conv2: conv(6, kernel = 2, stride = 2),
        relu,
        global_avg_pool,
        fc: linear(10),
    }
}

const STEPS: usize = 20;
const BATCH: usize = 16;

/// Copy `p`'s minibatch at `step`: rows of the data in an order its seed decides.
fn batch_rows(copy: usize, step: usize, rows: usize) -> Vec<u32> {
    (0..BATCH).map(|i| ((step * BATCH + i) * (2 * copy + 3) + copy * 7) % rows).map(|r| r as u32).collect()
}

#[test]
fn each_copy_follows_the_trajectory_it_has_alone() -> Result<(), EnsembleError> {
    check::<Mlp>(&[784])
}

#[test]
fn conv_copies_follow_their_trajectories_too() -> Result<(), EnsembleError> {
    check::<PooledLeNet>(&[3, 32, 32])?;
    check::<ConvPool>(&[2, 8, 8])
}

/// Depthwise and grouped convolutions: each copy's groups become groups of the copies' one
/// grouped convolution.
#[test]
fn grouped_conv_copies_follow_their_trajectories() -> Result<(), EnsembleError> {
    check::<GroupedConvNet>(&[8, 8, 8])
}

fn check<N: Network + Module>(input: &[usize]) -> Result<(), EnsembleError> {
    let device = Device::Cpu;
    let rows = 256;
    let data = seeded_normal(&Tensor::zeros([&[rows], input].concat(), DType::F64, &device)?, 17)?;
    let labels = Tensor::from_vec((0..rows as u32).map(|i| (i * 7) % 10).collect::<Vec<_>>(), rows, &device)?;
    let seeds = [3u64, 4, 5, 6];
    // In f64, so that 1e-5 is far above rounding (the logits at unit std pass the f32 rounding of
    // a differently ordered sum on to the loss), at rates where every copy trains without
    // diverging (past them, trajectories are chaotic and rounding alone separates them).
    let learning_rates = [0.02, 0.01, 0.04, 0.002];
    let weight_decay = 1e-3;

    let ensemble = Ensemble::new(N::plan(), &seeds, DType::F64, &device)?;
    let mut sgd = EnsembleSgd::new(&ensemble, &learning_rates, weight_decay)?;
    let mut together = Vec::new();
    for step in 0..STEPS {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for copy in 0..seeds.len() {
            let index = Tensor::new(batch_rows(copy, step, rows).as_slice(), &device)?;
            xs.push(data.index_select(&index, 0)?);
            ys.push(labels.index_select(&index, 0)?);
        }
        together.push(sgd.step(&ensemble, &Tensor::stack(&xs, 0)?, &Tensor::stack(&ys, 0)?)?);
    }

    for (copy, (&seed, &lr)) in seeds.iter().zip(&learning_rates).enumerate() {
        let varmap = VarMap::new();
        let net = N::new_seeded(&varmap, DType::F64, &device, seed)?;
        for (step, losses) in together.iter().enumerate() {
            let index = Tensor::new(batch_rows(copy, step, rows).as_slice(), &device)?;
            let logits = net.forward(&data.index_select(&index, 0)?)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &labels.index_select(&index, 0)?)?;
            let alone = loss.to_scalar::<f64>()?;
            let relative = (alone - losses[copy]).abs() / alone.abs();
            assert!(relative < 1e-5, "copy {copy}, step {step}: alone {alone}, in the ensemble {}", losses[copy]);
            let grads = loss.backward()?;
            for var in varmap.all_vars() {
                if let Some(grad) = grads.get(var.as_tensor()) {
                    let update = ((grad + (var.as_tensor() * weight_decay)?)? * lr)?;
                    var.set(&var.as_tensor().sub(&update)?)?;
                }
            }
        }
        println!(
            "{} copy {copy} (seed {seed}, lr {lr}): loss {:.4} -> {:.4}",
            N::NAME,
            together[0][copy],
            together[STEPS - 1][copy]
        );
    }
    Ok(())
}

/// Residual blocks (each branch's parameters named as the generated code names them), the
/// bottleneck, pooled shortcuts and centred weight rows.
#[test]
fn residual_copies_follow_their_trajectories() -> Result<(), EnsembleError> {
    check::<StridedResNet>(&[3, 16, 16])?;
    check::<PooledResNetCentred>(&[3, 16, 16])
}

#[test]
fn an_empty_population_is_a_typed_error() {
    assert!(matches!(Ensemble::new(Mlp::plan(), &[], DType::F32, &Device::Cpu), Err(EnsembleError::Empty)));
}

/// The host ensemble (plain Rust loops, per-sample friendly) trains each copy as the candle
/// ensemble does: same initial values, same calibration, same SGD with weight decay; the losses
/// agree within 1e-4 relative at every one of 20 steps, at minibatch 16 and at minibatch 1.
#[test]
fn host_ensemble_matches_the_candle_ensemble() -> Result<(), EnsembleError> {
    use scalenet::ensemble::HostEnsemble;
    let device = Device::Cpu;
    let rows = 256;
    let data = seeded_normal(&Tensor::zeros((rows, 784), DType::F32, &device)?, 23)?;
    let labels: Vec<u32> = (0..rows as u32).map(|i| (i * 7) % 10).collect();
    let seeds = [3u64, 4, 5, 6];
    let learning_rates = [0.1, 0.05, 0.2, 0.01];
    for batch in [16, 1] {
        let ensemble = Ensemble::new(Mlp::plan(), &seeds, DType::F32, &device)?;
        let mut sgd = EnsembleSgd::new(&ensemble, &learning_rates, 1e-3)?;
        let mut host: Option<HostEnsemble> = None;
        for step in 0..STEPS {
            let picks: Vec<Vec<u32>> =
                (0..seeds.len()).map(|copy| batch_rows(copy, step, rows)[..batch].to_vec()).collect();
            let index = Tensor::new(picks.concat().as_slice(), &device)?;
            let xs = data.index_select(&index, 0)?.reshape((seeds.len(), batch, 784))?;
            let ys: Vec<u32> = picks.concat().iter().map(|&r| labels[r as usize]).collect();
            let ys_tensor = Tensor::from_vec(ys.clone(), (seeds.len(), batch), &device)?;
            let flat = xs.flatten_all()?.to_vec1::<f32>()?;
            if step == 0 {
                // Each calibrates itself on the first minibatch (section 7).
                let mut fresh = HostEnsemble::new(&ensemble)?;
                fresh.calibrate_output(&flat, 0.05)?;
                ensemble.calibrate_output(&xs, 0.05)?;
                host = Some(fresh);
            }
            let host = host.as_mut().expect("made at step 0");
            let candle = sgd.step(&ensemble, &xs, &ys_tensor)?;
            let ours = host.step(&flat, &ys, &learning_rates, 1e-3)?;
            for (copy, (a, b)) in candle.iter().zip(&ours).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * a.abs(),
                    "batch {batch}, step {step}, copy {copy}: candle {a}, host {b}"
                );
            }
        }
    }
    Ok(())
}

//! The CUDA path against the CPU: every op and every network kind of the tests gives the CPU's
//! values and gradients within 1e-5 relative in f32 from the same seed, and training the LeNet
//! on the GPU lowers its loss.
//!
//! Built with `--features cuda` (or `cudnn`); without it, or on a machine without a GPU, each test
//! says so and returns. `scripts/cuda/build.sh` builds them here, `scripts/cuda/pack.sh` packs
//! them for a GPU machine, where `run-gpu-checks.sh` runs them (docs/gpu.md).

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use fixtures::networks::{
    DigitsLeNet, DigitsResNet, DigitsResNetPooled, Mlp, PooledLeNet, PooledResNet, StridedLeNet, StridedResNet,
    WideConvNet,
};
use scalenet::data::ImageDataset;
use scalenet::optim::{ParamsSgd, Sgd};
use scalenet::Network;

/// f32 tolerance of the comparisons: the largest difference over the largest value.
const TOLERANCE: f64 = 1e-5;

/// The GPU to compare with, or `None` (and a line saying why) when there is none.
fn gpu() -> Option<Device> {
    if !cfg!(feature = "cuda") {
        eprintln!("skipped: built without `--features cuda` (scripts/cuda/build.sh builds the GPU tests)");
        return None;
    }
    match Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(err) => {
            eprintln!("skipped: no CUDA device found ({err})");
            None
        }
    }
}

fn relative_error(actual: &Tensor, expected: &Tensor) -> Result<f64> {
    let actual = actual.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let expected = expected.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let diff = (&actual - &expected)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = expected.abs()?.max_all()?.to_scalar::<f64>()?;
    Ok(if scale == 0.0 { diff } else { diff / scale })
}

fn random(dims: &[usize], seed: u64) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..dims.iter().product::<usize>()).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(values, dims, &Device::Cpu)
}

/// Runs `f` on copies of `inputs` on the CPU and on `gpu`, and compares the values and the
/// gradient of every input under the same random upstream gradient.
fn compare_op(name: &str, gpu: &Device, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    let mut results = Vec::new();
    for device in [&Device::Cpu, gpu] {
        let vars = inputs.iter().map(|t| Var::from_tensor(&t.to_device(device)?)).collect::<Result<Vec<_>>>()?;
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let ys = f(&tensors)?;
        let upstream = random(ys.dims(), 7)?.to_device(device)?;
        let grads = (&ys * &upstream)?.sum_all()?.backward()?;
        let grads = tensors.iter().map(|t| grads.get(t).cloned()).collect::<Vec<_>>();
        results.push((ys, grads));
    }
    let (cpu, cuda) = (&results[0], &results[1]);
    let error = relative_error(&cuda.0, &cpu.0)?;
    println!("{name}: value {error:.2e}");
    assert!(error < TOLERANCE, "{name}: values differ by {error:e}");
    for (index, (c, g)) in cpu.1.iter().zip(&cuda.1).enumerate() {
        let (c, g) = (c.as_ref().expect("a cpu gradient"), g.as_ref().expect("a cuda gradient"));
        let error = relative_error(g, c)?;
        println!("{name}: gradient of input {index} {error:.2e}");
        assert!(error < TOLERANCE, "{name}: gradients of input {index} differ by {error:e}");
    }
    Ok(())
}

#[test]
fn ops_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu() else { return Ok(()) };
    #[rustfmt::skip]
    let convs = [
        // (batch, in, out, size, kernel, stride, padding)
        (4, 3, 8, 12, 3, 1, 1), (3, 6, 16, 14, 5, 1, 0), (2, 4, 6, 9, 2, 2, 0),
        (5, 8, 4, 7, 1, 1, 0), (1, 3, 5, 11, 5, 1, 2), (2, 16, 32, 8, 3, 1, 1),
    ];
    for (i, (batch, cin, cout, size, k, stride, padding)) in convs.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let inputs = [
            random(&[batch, cin, size, size], seed)?,
            random(&[cout, cin, k, k], seed + 1)?,
            random(&[cout], seed + 2)?,
        ];
        compare_op(&format!("conv2d {cin}->{cout} k{k} s{stride} p{padding}"), &gpu, &inputs, |t| {
            scalenet::ops::conv2d_scaled(&t[0], &t[1], Some(&t[2]), stride, padding, 0.7)
        })?;
    }
    let inputs = [random(&[6, 20], 1)?, random(&[9, 20], 2)?, random(&[9], 3)?];
    compare_op("linear 20->9", &gpu, &inputs, |t| scalenet::ops::linear_scaled(&t[0], &t[1], Some(&t[2]), 1.3))?;
    let image = [random(&[3, 4, 8, 8], 4)?];
    compare_op("relu", &gpu, &image, |t| scalenet::ops::relu(&t[0]))?;
    compare_op("avg_pool 2", &gpu, &image, |t| scalenet::ops::avg_pool(&t[0], 2))?;
    compare_op("avg_pool 3 (border unseen)", &gpu, &image, |t| scalenet::ops::avg_pool(&t[0], 3))?;
    compare_op("global_avg_pool", &gpu, &image, |t| scalenet::ops::global_avg_pool(&t[0]))?;
    let pair = [random(&[3, 4, 8, 8], 5)?, random(&[3, 4, 8, 8], 6)?];
    compare_op("weighted sum", &gpu, &pair, |t| scalenet::ops::weighted_sum(&t[0], 0.6, &t[1], 0.8))?;
    Ok(())
}

/// The same network, seed and batch on both devices: output and every parameter's gradient.
fn compare_network<N: Network>(gpu: &Device, batch: usize) -> Result<()> {
    let mut dims = vec![batch];
    dims.extend(N::plan().input.dims());
    let xs = random(&dims, 42)?;
    let mut results = Vec::new();
    for device in [&Device::Cpu, gpu] {
        let varmap = VarMap::new();
        let net = N::new_seeded(&varmap, DType::F32, device, 3)?;
        let ys = net.forward_hooked(&xs.to_device(device)?, false, None)?;
        let upstream = random(ys.dims(), 8)?.to_device(device)?;
        let grads = (&ys * &upstream)?.sum_all()?.backward()?;
        let mut named: Vec<(String, Tensor)> = varmap
            .data()
            .lock()
            .expect("the varmap's lock")
            .iter()
            .filter_map(|(name, var)| grads.get(var.as_tensor()).map(|g| (name.clone(), g.clone())))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        results.push((ys, named));
    }
    let error = relative_error(&results[1].0, &results[0].0)?;
    println!("{}: output {error:.2e}", N::NAME);
    assert!(error < TOLERANCE, "{}: outputs differ by {error:e}", N::NAME);
    assert_eq!(results[0].1.len(), results[1].1.len(), "{}: the same parameters get gradients", N::NAME);
    let mut worst = (0.0f64, String::new());
    for ((name, cpu), (_, cuda)) in results[0].1.iter().zip(&results[1].1) {
        let error = relative_error(cuda, cpu)?;
        assert!(error < TOLERANCE, "{}: the gradients of {name} differ by {error:e}", N::NAME);
        if error > worst.0 {
            worst = (error, name.clone());
        }
    }
    println!("{}: {} gradients, largest difference {:.2e} ({})", N::NAME, results[0].1.len(), worst.0, worst.1);
    Ok(())
}

#[test]
fn networks_match_the_cpu() -> Result<()> {
    let Some(gpu) = gpu() else { return Ok(()) };
    compare_network::<PooledLeNet>(&gpu, 8)?;
    compare_network::<StridedLeNet>(&gpu, 8)?;
    compare_network::<Mlp>(&gpu, 16)?;
    compare_network::<StridedResNet>(&gpu, 8)?;
    compare_network::<PooledResNet>(&gpu, 8)?;
    compare_network::<DigitsResNet>(&gpu, 8)?;
    compare_network::<DigitsResNetPooled>(&gpu, 8)?;
    compare_network::<WideConvNet>(&gpu, 4)?;
    Ok(())
}

#[test]
fn lenet_trains_on_the_gpu() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let Some(gpu) = gpu() else { return Ok(()) };
    // Relative to the working directory first: a packed test binary runs in another checkout.
    let relative = std::path::Path::new("data/digits.safetensors");
    let path = if relative.exists() {
        relative.to_path_buf()
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
    };
    let data = ImageDataset::from_safetensors(&path)?;
    let (train, _) = data.standardized()?.upsampled(4)?.shuffled(0)?.split(1500)?;
    let train = train.to_device(&gpu)?;
    let varmap = VarMap::new();
    let net = DigitsLeNet::new_seeded(&varmap, DType::F32, &gpu, 0)?;
    let mut sgd = Sgd::new(varmap.all_vars(), ParamsSgd::new(0.1))?;
    let mut losses = Vec::new();
    let mut watch = scalenet::finite::TrainingWatch::new();
    for epoch in 0..3 {
        let epoch_data = train.shuffled(epoch)?;
        let step = |loss: &Tensor| watch.backward_step(&mut sgd, &varmap, loss);
        losses.push(fixtures::train::train_epoch(&net, &epoch_data, 32, step, |_| ())?);
    }
    println!("DigitsLeNet on the GPU, training loss per epoch: {losses:?}");
    assert!(losses[2] < 0.5 * losses[0], "the loss fell only from {} to {}", losses[0], losses[2]);
    Ok(())
}

//! One f32 training step (forward, cross-entropy, backward, SGD) on the CPU, the same step in bf16
//! and f16 with f32 master weights, and the ops it is made of. `cargo bench --bench training_step`; then `python3 scripts/bench_torch.py` times the same
//! networks in PyTorch and prints the ratios (docs/performance.md).
//!
//! `SCALENET_BENCH_DEVICE=cuda` runs it on the first GPU (a build with `--features cuda` or
//! `cudnn`; scripts/cuda/pack.sh packs it for a GPU machine), with the paper's ResNet-50 at batch
//! 32 added and every step waiting for the device to finish; `SCALENET_TF32=1` allows TF32
//! (`scalenet::ops::set_allow_tf32`) and names the groups `training step, tf32/..`.
//!
//! Each network runs twice: as `network!` generates it with scalenet's optimizer (`scalenet`), and
//! as the same network written with candle-nn's own layers and optimizer (`candle-nn`), built from
//! the generated network's plan, so both have the same layers, shapes and fixed scalars. The plans
//! are also written to `target/criterion/training-step-networks.json` for the PyTorch script.
//! Both run after `scalenet::ops::park_idle_candle_threads()`, as the examples do.

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{loss, Optimizer, VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use fixtures::candle_nn_net::{candle_nn_layers, forward};
use fixtures::networks::{Mlp, ResNet50, StridedLeNet, StridedResNet, WideConvNet};
use scalenet::calculus::{Op, Plan, Step, StepOp};
use scalenet::optim::{AdamW, ParamsAdamW, ParamsSgd, Sgd};
use serde_json::{json, Value};

/// The device of the bench: `SCALENET_BENCH_DEVICE` (`cpu`, the default, or `cuda`).
fn device() -> Device {
    match std::env::var("SCALENET_BENCH_DEVICE").as_deref() {
        Ok("cuda") => Device::new_cuda(0).expect("SCALENET_BENCH_DEVICE=cuda: no CUDA device (or built without cuda)"),
        Ok("cpu") | Err(_) => Device::Cpu,
        Ok(other) => panic!("SCALENET_BENCH_DEVICE must be cpu or cuda, not {other}"),
    }
}

/// The networks and batch sizes of the bench; the ResNet-50 only on a GPU.
fn networks(device: &Device) -> Vec<(&'static str, Plan, usize)> {
    let mut networks = vec![
        ("strided LeNet 3x32x32", StridedLeNet::plan().clone(), 64),
        ("MLP 784-384-64-10", Mlp::plan().clone(), 128),
        ("strided pre-activation ResNet 3x16x16", StridedResNet::plan().clone(), 128),
        ("wide conv net 64-128 3x32x32", WideConvNet::plan().clone(), 32),
    ];
    if device.is_cuda() {
        networks.push(("ResNet-50 3x224x224", ResNet50::plan().clone(), 32));
    }
    networks
}

/// The plan's steps as the PyTorch script reads them.
fn steps_json(steps: &[Step]) -> Vec<Value> {
    steps
        .iter()
        .map(|step| match &step.op {
            StepOp::FixedScale { factor, .. } => json!({ "scale": factor }),
            StepOp::Block { alpha, beta, main, shortcut, .. } => {
                json!({ "block": { "alpha": alpha, "beta": beta, "main": steps_json(main), "shortcut": steps_json(shortcut) } })
            }
            StepOp::Declared { op, .. } => match op {
                Op::Conv2d { out_channels, kernel, stride, padding, bias, groups } => json!({ "conv": {
                    "in": step.input_shape.channels(), "out": out_channels, "kernel": kernel,
                    "stride": stride, "padding": padding, "bias": bias, "groups": groups } }),
                Op::Linear { out_features, bias } => {
                    json!({ "linear": { "in": step.input_shape.channels(), "out": out_features, "bias": bias } })
                }
                Op::AvgPool2d { kernel, .. } => json!({ "avg_pool": kernel }),
                Op::Scale { factor, .. } => json!({ "scale": factor }),
                Op::Bias => json!({ "bias": step.input_shape.channels() }),
                other => json!(other.keyword()),
            },
        })
        .collect()
}

fn input_and_labels(plan: &Plan, batch: usize, device: &Device) -> (Tensor, Tensor) {
    let mut dims = vec![batch];
    dims.extend(plan.input.dims());
    let xs = Tensor::randn(0f32, 1., dims, device).unwrap();
    let ys = Tensor::zeros(batch, DType::U32, device).unwrap();
    (xs, ys)
}

fn training_steps(c: &mut Criterion) {
    scalenet::ops::park_idle_candle_threads();
    let mut manifest = Vec::new();
    let device = &device();
    let tf32 = std::env::var("SCALENET_TF32").is_ok_and(|v| v == "1");
    scalenet::ops::set_allow_tf32(tf32);
    let title = if tf32 { "training step, tf32" } else { "training step" };
    for (name, plan, batch) in networks(device) {
        let mut group = c.benchmark_group(format!("{title}/{name}, batch {batch}"));
        let (xs, ys) = input_and_labels(&plan, batch, device);
        // The generated network: scalenet's ops, fixed scalars folded, scalenet's optimizer.
        let varmap = VarMap::new();
        let step: Box<dyn Fn() -> candle_core::Result<Tensor>> = match name {
            n if n.starts_with("strided LeNet") => {
                let net = StridedLeNet::new_seeded(&varmap, DType::F32, device, 0).unwrap();
                Box::new(move || net.forward_t(&xs, true))
            }
            n if n.starts_with("MLP") => {
                let net = Mlp::new_seeded(&varmap, DType::F32, device, 0).unwrap();
                Box::new(move || net.forward_t(&xs, true))
            }
            n if n.starts_with("strided pre-activation") => {
                let net = StridedResNet::new_seeded(&varmap, DType::F32, device, 0).unwrap();
                Box::new(move || net.forward_t(&xs, true))
            }
            n if n.starts_with("ResNet-50") => {
                let net = ResNet50::new_seeded(&varmap, DType::F32, device, 0).unwrap();
                Box::new(move || net.forward_t(&xs, true))
            }
            _ => {
                let net = WideConvNet::new_seeded(&varmap, DType::F32, device, 0).unwrap();
                Box::new(move || net.forward_t(&xs, true))
            }
        };
        let mut sgd = Sgd::new(varmap.all_vars(), ParamsSgd::new(0.01)).unwrap();
        group.bench_function("scalenet", |b| {
            b.iter(|| {
                sgd.backward_step(&loss::cross_entropy(&step().unwrap(), &ys).unwrap()).unwrap();
                device.synchronize().unwrap()
            })
        });
        // The same network in candle-nn's layers and optimizer.
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let layers = candle_nn_layers(&plan.steps, &vb, "", true).unwrap();
        let (xs, _) = input_and_labels(&plan, batch, device);
        let mut sgd = candle_nn::SGD::new(varmap.all_vars(), 0.01).unwrap();
        group.bench_function("candle-nn", |b| {
            b.iter(|| {
                sgd.backward_step(&loss::cross_entropy(&forward(&layers, &xs).unwrap(), &ys).unwrap()).unwrap();
                device.synchronize().unwrap()
            })
        });
        group.finish();
        manifest.push(json!({
            "name": name,
            "group": format!("{title}/{name}, batch {batch}"),
            "input": plan.input.dims(),
            "batch": batch,
            "device": if device.is_cuda() { "cuda" } else { "cpu" },
            "steps": steps_json(&plan.steps),
        }));
    }
    let target =
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into());
    let path = std::path::Path::new(&target).join("criterion/training-step-networks.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

/// A network's forward pass in training mode.
type Forward = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>;

/// A training step in f32, bf16 and f16 (f32 master weights, the calculus's loss scale:
/// `scalenet::precision`), the same network and batch. On the CPU the half types are expected
/// slower (every product widens its operands to f32 and rounds back); the figure is what it costs,
/// not a target. On a GPU (`SCALENET_BENCH_DEVICE=cuda`) the ResNet-50 is added.
fn mixed_precision_steps(c: &mut Criterion) {
    use scalenet::calculus::precision::OutputGradient;
    use scalenet::calculus::Format;
    use scalenet::precision::{dtype, LossScaler, MixedPrecision};
    use scalenet::Network;
    scalenet::ops::park_idle_candle_threads();
    let device = &device();
    fn step_of<N: Network + ModuleT + 'static>(varmap: &VarMap, format: Format, device: &Device) -> Forward {
        let net = N::new_seeded(varmap, dtype(format), device, 0).unwrap();
        Box::new(move |xs: &Tensor| net.forward_t(xs, true))
    }
    let mut networks = vec![("strided LeNet 3x32x32", StridedLeNet::plan(), 64)];
    networks.push(("strided pre-activation ResNet 3x16x16", StridedResNet::plan(), 128));
    if device.is_cuda() {
        networks.push(("ResNet-50 3x224x224", ResNet50::plan(), 32));
    }
    for (name, plan, batch) in networks {
        let mut group = c.benchmark_group(format!("mixed precision step/{name}, batch {batch}"));
        for format in Format::ALL {
            let varmap = VarMap::new();
            let forward = match name {
                n if n.starts_with("strided LeNet") => step_of::<StridedLeNet>(&varmap, format, device),
                n if n.starts_with("strided pre-activation") => step_of::<StridedResNet>(&varmap, format, device),
                _ => step_of::<ResNet50>(&varmap, format, device),
            };
            let (xs, ys) = input_and_labels(plan, batch, device);
            let xs = xs.to_dtype(dtype(format)).unwrap();
            let classes = plan.output.channels();
            let scaler = LossScaler::for_plan(plan, format, OutputGradient::cross_entropy(classes, batch));
            let mut training = MixedPrecision::<Sgd>::new(&varmap, scaler, ParamsSgd::new(0.01)).unwrap();
            group.bench_function(format.name(), |b| {
                b.iter(|| {
                    let logits = forward(&xs).unwrap().to_dtype(DType::F32).unwrap();
                    training.backward_step(&loss::cross_entropy(&logits, &ys).unwrap()).unwrap();
                    device.synchronize().unwrap()
                })
            });
        }
        group.finish();
    }
}

fn random_var(dims: &[usize]) -> Var {
    Var::from_tensor(&Tensor::randn(0f32, 1., dims, &Device::Cpu).unwrap()).unwrap()
}

/// Forward and backward of one op at a size from the networks above, candle's own against
/// scalenet's.
fn ops(c: &mut Criterion) {
    scalenet::ops::park_idle_candle_threads();
    fn compare(c: &mut Criterion, name: &str, candle: impl Fn() -> Tensor, scalenet: impl Fn() -> Tensor) {
        let mut group = c.benchmark_group(format!("op/{name}, forward and backward"));
        group.bench_function("candle", |b| b.iter(|| candle().sum_all().unwrap().backward().unwrap()));
        group.bench_function("scalenet", |b| b.iter(|| scalenet().sum_all().unwrap().backward().unwrap()));
        group.finish();
    }
    let (xs, kernel, bias) = (random_var(&[64, 6, 16, 16]), random_var(&[16, 6, 5, 5]), random_var(&[16]));
    compare(
        c,
        "conv2d 6->16 k5 on 16x16 with bias, batch 64",
        || xs.conv2d(&kernel, 0, 1, 1, 1).unwrap().broadcast_add(&bias.reshape((1, 16, 1, 1)).unwrap()).unwrap(),
        || scalenet::ops::conv2d_scaled(&xs, &kernel, Some(&bias), 1, 0, 1.0).unwrap(),
    );
    let (xs, kernel) = (random_var(&[32, 64, 32, 32]), random_var(&[64, 64, 3, 3]));
    compare(
        c,
        "conv2d 64->64 k3 p1 on 32x32, batch 32",
        || xs.conv2d(&kernel, 1, 1, 1, 1).unwrap(),
        || scalenet::ops::conv2d(&xs, &kernel, 1, 1).unwrap(),
    );
    let (xs, weight, bias) = (random_var(&[128, 784]), random_var(&[384, 784]), random_var(&[384]));
    let candle_linear = candle_nn::Linear::new(weight.as_tensor().clone(), Some(bias.as_tensor().clone()));
    compare(
        c,
        "linear 784->384, batch 128",
        || candle_linear.forward(&xs).unwrap(),
        || scalenet::ops::linear_scaled(&xs, &weight, Some(&bias), 1.0).unwrap(),
    );
    let xs = random_var(&[64, 6, 32, 32]);
    compare(c, "relu on 64x6x32x32", || xs.relu().unwrap(), || scalenet::ops::relu(&xs).unwrap());
    compare(c, "avg_pool 2 on 64x6x32x32", || xs.avg_pool2d(2).unwrap(), || scalenet::ops::avg_pool(&xs, 2).unwrap());
}

/// One optimizer step over the parameters of the wide conv net (about 0.4 M values) from fixed
/// gradients.
fn optimizers(c: &mut Criterion) {
    scalenet::ops::park_idle_candle_threads();
    let varmap = VarMap::new();
    let net = WideConvNet::new_seeded(&varmap, DType::F32, &Device::Cpu, 0).unwrap();
    let (xs, ys) = input_and_labels(WideConvNet::plan(), 8, &Device::Cpu);
    let grads = loss::cross_entropy(&net.forward(&xs).unwrap(), &ys).unwrap().backward().unwrap();
    let vars = varmap.all_vars();
    let mut group = c.benchmark_group("optimizer step/wide conv net parameters");
    let mut candle_sgd = candle_nn::SGD::new(vars.clone(), 1e-6).unwrap();
    group.bench_function("candle-nn SGD", |b| b.iter(|| candle_sgd.step(&grads).unwrap()));
    let mut sgd = Sgd::new(vars.clone(), ParamsSgd::new(1e-6)).unwrap();
    group.bench_function("scalenet Sgd", |b| b.iter(|| sgd.step(&grads).unwrap()));
    let params = ParamsAdamW { lr: 1e-6, ..Default::default() };
    let mut candle_adamw = candle_nn::AdamW::new(vars.clone(), params.clone()).unwrap();
    group.bench_function("candle-nn AdamW", |b| b.iter(|| candle_adamw.step(&grads).unwrap()));
    let mut adamw = AdamW::new(vars, params).unwrap();
    group.bench_function("scalenet AdamW", |b| b.iter(|| adamw.step(&grads).unwrap()));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = training_steps, mixed_precision_steps, ops, optimizers
}
criterion_main!(benches);

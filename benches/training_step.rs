//! One f32 training step (forward, cross-entropy, backward, SGD) of generated networks on the CPU,
//! and the convolution's backward pass alone. `cargo bench --bench training_step`.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{loss, ModuleT, Optimizer, VarMap, SGD};
use criterion::{criterion_group, criterion_main, Criterion};
use fixtures::networks::{Mlp, StridedLeNet, StridedResNet};
use scalenet::Network;

fn step<N: Network + ModuleT>(c: &mut Criterion, name: &str, input: &[usize], batch: usize) {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let net = N::new_seeded(&varmap, DType::F32, &device, 0).unwrap();
    let mut dims = vec![batch];
    dims.extend_from_slice(input);
    let xs = Tensor::randn(0f32, 1., dims, &device).unwrap();
    let ys = Tensor::zeros(batch, DType::U32, &device).unwrap();
    let mut sgd = SGD::new(varmap.all_vars(), 0.01).unwrap();
    c.bench_function(&format!("training step/{name}, batch {batch}"), |b| {
        b.iter(|| {
            let loss = loss::cross_entropy(&net.forward_t(&xs, true).unwrap(), &ys).unwrap();
            sgd.backward_step(&loss).unwrap();
        })
    });
}

fn networks(c: &mut Criterion) {
    step::<StridedLeNet>(c, "strided LeNet 3x32x32", &[3, 32, 32], 64);
    step::<Mlp>(c, "MLP 784-384-64-10", &[784], 128);
    step::<StridedResNet>(c, "strided pre-activation ResNet 3x16x16", &[3, 16, 16], 128);
}

/// The backward pass of one stride-1 convolution (LeNet's conv2 at batch 64): candle's
/// `conv2d`, whose input gradient is a `conv_transpose2d`, against scalenet's.
fn conv_backward(c: &mut Criterion) {
    let device = Device::Cpu;
    let xs = Var::from_tensor(&Tensor::randn(0f32, 1., (64, 6, 16, 16), &device).unwrap()).unwrap();
    let kernel = Var::from_tensor(&Tensor::randn(0f32, 1., (16, 6, 5, 5), &device).unwrap()).unwrap();
    let upstream = Tensor::randn(0f32, 1., (64, 16, 12, 12), &device).unwrap();
    let mut group = c.benchmark_group("conv2d 6->16 k5 on 16x16, batch 64, forward and backward");
    group.bench_function("candle", |b| {
        b.iter(|| {
            (xs.as_tensor().conv2d(kernel.as_tensor(), 0, 1, 1, 1).unwrap() * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    group.bench_function("scalenet", |b| {
        b.iter(|| {
            (scalenet::ops::conv2d(xs.as_tensor(), kernel.as_tensor(), 1, 0).unwrap() * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = networks, conv_backward
}
criterion_main!(benches);

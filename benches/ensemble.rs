//! One SGD step of a sweep: P copies of the paper's section 9 network (64 inputs, as the digits
//! dataset has, 384-64-10) trained as one ensemble, against the same P copies stepped one at a
//! time, and against the host ensemble (plain Rust loops, threads over copies).
//! `cargo bench --bench ensemble`.

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use scalenet::calculus::{analyze, NetworkSpec, Op, Shape};
use scalenet::ensemble::{Ensemble, EnsembleSgd, HostEnsemble};

fn plan() -> scalenet::calculus::Plan {
    let spec = NetworkSpec::new(Shape::Vector { features: 64 })
        .named("fc1", Op::Linear { out_features: 384, bias: true })
        .layer(Op::Relu)
        .named("fc2", Op::Linear { out_features: 64, bias: true })
        .layer(Op::Relu)
        .named("fc3", Op::Linear { out_features: 10, bias: true });
    analyze(&spec).expect("a valid network")
}

fn sweep_step(c: &mut Criterion) {
    let plan = plan();
    let device = Device::Cpu;
    let population = 56; // 14 learning rates x 4 seeds
    let mut group = c.benchmark_group("sweep step, 56 copies");
    for batch in [1usize, 32] {
        let seeds: Vec<u64> = (0..population as u64).collect();
        let rates: Vec<f64> = (0..population).map(|i| 2f64.powi(-((i % 14) as i32))).collect();
        let ensemble = Ensemble::new(&plan, &seeds, DType::F32, &device).unwrap();
        let mut sgd = EnsembleSgd::new(&ensemble, &rates, 1e-5).unwrap();
        let xs = Tensor::randn(0f32, 1., (population, batch, 64), &device).unwrap();
        let ys = Tensor::zeros((population, batch), DType::U32, &device).unwrap();
        group.bench_with_input(BenchmarkId::new("ensemble", batch), &batch, |b, _| {
            b.iter(|| sgd.step(&ensemble, &xs, &ys).unwrap())
        });
        let mut host = HostEnsemble::new(&ensemble).unwrap();
        let (flat_xs, flat_ys) = (xs.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0u32; population * batch]);
        group.bench_with_input(BenchmarkId::new("host ensemble", batch), &batch, |b, _| {
            b.iter(|| host.step(&flat_xs, &flat_ys, &rates, 1e-5).unwrap())
        });
        let singles: Vec<(Ensemble, EnsembleSgd)> = seeds
            .iter()
            .zip(&rates)
            .map(|(&seed, &rate)| {
                let one = Ensemble::new(&plan, &[seed], DType::F32, &device).unwrap();
                let sgd = EnsembleSgd::new(&one, &[rate], 1e-5).unwrap();
                (one, sgd)
            })
            .collect();
        let x1 = Tensor::randn(0f32, 1., (1, batch, 64), &device).unwrap();
        let y1 = Tensor::zeros((1, batch), DType::U32, &device).unwrap();
        let mut singles = singles;
        group.bench_with_input(BenchmarkId::new("one at a time", batch), &batch, |b, _| {
            b.iter(|| {
                for (one, sgd) in singles.iter_mut() {
                    sgd.step(one, &x1, &y1).unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sweep_step);
criterion_main!(benches);

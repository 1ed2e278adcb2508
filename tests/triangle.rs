//! The triangle reparameterization and the exact count of linear pieces, on networks declared
//! with `network!` (fixtures/triangle.rs).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use fixtures::networks::DigitsLeNet;
use fixtures::triangle::*;
use scalenet::regions::{linear_regions, RegionsError};
use scalenet::triangle::{mse, Triangle, TriangleError};
use scalenet::Network;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Random peaks give exactly `2^d` pieces on [0, 1] for `d` hidden layers, at every depth from 3
/// to 10 and for several seeds, also through the fixed scalars of a network with the calculus's
/// defaults; and the generated network computes the parameterization's function.
#[test]
fn random_peaks_give_exactly_two_to_the_depth_pieces() -> Result<()> {
    fn check<N: Network>(depth: u32) -> Result<()> {
        for seed in 0..3 {
            let pieces = pieces_at_init::<N>(seed, true)?;
            assert_eq!(pieces.count(), 1 << depth, "{} seed {seed}: {:?}", N::NAME, pieces.breakpoints);
        }
        Ok(())
    }
    check::<Triangle3>(3)?;
    check::<Triangle4>(4)?;
    check::<Triangle5>(5)?;
    check::<Triangle6>(6)?;
    check::<Triangle7>(7)?;
    check::<Triangle8>(8)?;
    check::<Triangle9>(9)?;
    check::<Triangle10>(10)?;
    check::<TriangleWithScalars>(4)?;

    let varmap = VarMap::new();
    let net = TriangleWithScalars::new_seeded(&varmap, DType::F64, &Device::Cpu, 3)?;
    let triangle = Triangle::new(4, 3, &Device::Cpu)?;
    triangle.release::<TriangleWithScalars>(&varmap)?;
    let (xs, _) = power_data(1, 101)?;
    let gap = (net.forward(&xs)? - triangle.forward(&xs)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(gap < 1e-12, "{gap}");
    Ok(())
}

/// The same architecture under fan-in (He) init, zero biases: the network is positively
/// homogeneous in its input, so on [0, 1] it is one linear piece (100 inits).
#[test]
fn fan_in_init_is_one_piece_on_the_unit_interval() -> Result<()> {
    let counts: Vec<usize> =
        (0..100).map(|seed| pieces_at_init::<Triangle5>(seed, false).map(|p| p.count())).collect::<Result<_>>()?;
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    println!("fan_in, depth 5, width 4: mean {mean} pieces over 100 inits");
    assert!(counts.iter().all(|&c| c == 1), "{counts:?}");
    Ok(())
}

/// The walk finds what dense sampling finds on networks with random biases (whose pieces are
/// wide enough for a 200001-point grid to see), and the breakpoints are where the slope changes.
#[test]
fn linear_regions_agree_with_dense_sampling() -> Result<()> {
    let mut total = 0;
    for seed in 0..10 {
        let varmap = VarMap::new();
        let net = Triangle3::new_seeded(&varmap, DType::F64, &Device::Cpu, seed)?;
        // Random biases so the kinks fall inside [-2, 2].
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.ends_with(".bias") {
                let n = var.dim(0)?;
                var.set(&scalenet::diagnostics::seeded_normal(
                    &Tensor::zeros(n, DType::F64, &Device::Cpu)?,
                    seed * 31 + n as u64,
                )?)?;
            }
        }
        let pieces = linear_regions(&net, (-2.0, 2.0))?;
        let n = 200_001;
        let xs: Vec<f64> = (0..n).map(|i| -2.0 + 4.0 * i as f64 / (n - 1) as f64).collect();
        let ys = net.forward(&Tensor::from_vec(xs.clone(), (n, 1), &Device::Cpu)?)?.flatten_all()?.to_vec1::<f64>()?;
        let slopes: Vec<f64> = ys.windows(2).zip(xs.windows(2)).map(|(y, x)| (y[1] - y[0]) / (x[1] - x[0])).collect();
        let changes = slopes.windows(2).filter(|s| (s[1] - s[0]).abs() > 1e-6 * (1.0 + s[0].abs())).count();
        // A kink strictly inside a grid cell shows as two slope changes (into and out of the
        // mixed cell); one on a grid point as one.
        let sampled_kinks = slopes
            .windows(3)
            .filter(|s| {
                (s[1] - s[0]).abs() > 1e-6 * (1.0 + s[0].abs()) && (s[2] - s[1]).abs() <= 1e-6 * (1.0 + s[1].abs())
            })
            .count();
        assert!(changes >= sampled_kinks);
        assert_eq!(pieces.breakpoints.len(), sampled_kinks, "seed {seed}: walk {:?}", pieces.breakpoints);
        total += sampled_kinks;
    }
    assert!(total >= 10, "the networks have too few kinks to test anything: {total}");
    Ok(())
}

/// Pretraining through the parameterization lowers the loss, releasing keeps the function
/// exactly, and the released network trains on.
#[test]
fn pretraining_then_release_then_raw_training() -> Result<()> {
    let (xs, ys) = power_data(3, 200)?;
    let varmap = VarMap::new();
    let net = Triangle5::new_seeded(&varmap, DType::F64, &Device::Cpu, 0)?;
    let triangle = Triangle::new(5, 0, &Device::Cpu)?;
    let losses = triangle.pretrain(&xs, &ys, 300, 1e-3)?;
    assert!(losses[299] < losses[0] / 10.0, "{} -> {}", losses[0], losses[299]);
    triangle.release::<Triangle5>(&varmap)?;
    let released = mse(&net.forward(&xs)?, &ys)?;
    let through = mse(&triangle.forward(&xs)?, &ys)?;
    assert!((released - through).abs() < 1e-12 * (1.0 + through), "{released} vs {through}");
    let raw = scalenet::triangle::train_mse(&varmap, |xs| net.forward(xs), &xs, &ys, 200, 1e-3)?;
    assert!(raw[199] < raw[0], "{} -> {}", raw[0], raw[199]);
    Ok(())
}

/// Networks of another form are typed errors that say what is wrong, not panics.
#[test]
fn other_networks_are_typed_errors() -> Result<()> {
    let varmap = VarMap::new();
    Triangle5::new_seeded(&varmap, DType::F64, &Device::Cpu, 0)?;
    let error = Triangle::new(3, 0, &Device::Cpu)?.release::<Triangle5>(&varmap).unwrap_err();
    assert!(matches!(error, TriangleError::Shape { .. }) && error.to_string().contains("6 linear layers"), "{error}");
    let error = Triangle::new(5, 0, &Device::Cpu)?.release::<Triangle5>(&VarMap::new()).unwrap_err();
    assert!(matches!(error, TriangleError::Missing { .. }), "{error}");
    let lenet = DigitsLeNet::new_seeded(&VarMap::new(), DType::F32, &Device::Cpu, 0)?;
    assert!(matches!(linear_regions(&lenet, (0.0, 1.0)), Err(RegionsError::NotOneInput { .. })));
    let net = Triangle3::new_seeded(&VarMap::new(), DType::F64, &Device::Cpu, 0)?;
    assert!(matches!(linear_regions(&net, (1.0, 0.0)), Err(RegionsError::Interval(..))));
    Ok(())
}

//! The paper's Fig. 1 and Fig. 2 and the coordinate check, on small sizes (seconds). The full
//! figures come from `cargo run --release --example diagnose -- lenet` (see docs/diagnostics.md).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use scalenet::diagnostics::{gauss_newton, quartiles, seeded_normal, CoordinateCheck, Diagnosis, GaussNewton};
use scalenet::network;

use fixtures::{networks, variants};

network! {
    /// Small enough to build its Gauss-Newton matrix entry by entry.
    pub struct Tiny {
        input: [4],
        fc1: linear(5),
        relu,
        fc2: linear(3),
    }
}

/// `gauss_newton`'s blocks equal `Σ_b ‖J_bᵀ R_b J_b r‖² / B / sqrt(n_l n_m)` computed from the
/// explicit per-sample Jacobians (central differences of every weight, in f64) and the same `R_b`
/// and `r`. This checks the finite-difference JVP, the backward pass and the normalization.
#[test]
fn gauss_newton_blocks_match_the_explicit_matrix() -> candle_core::Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let net = Tiny::new_seeded(&varmap, DType::F64, &device, 3)?;
    let batch = 6;
    let input = seeded_normal(&Tensor::zeros((batch, 4), DType::F64, &device)?, 11)?;
    let seed = 5;
    let measured = gauss_newton(&net, &varmap, &input, seed)?;

    let vars: Vec<Var> = {
        let data = varmap.data().lock().unwrap();
        measured.layers.iter().map(|name| data[name].clone()).collect()
    };
    let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
    let total: usize = sizes.iter().sum();
    let offsets: Vec<usize> = sizes.iter().scan(0, |acc, n| Some(std::mem::replace(acc, *acc + n))).collect();
    // Per-sample Jacobian of the 3 outputs with respect to all weights: jacobian[b][o][p].
    let mut jacobian = vec![vec![vec![0.0; total]; 3]; batch];
    let h = 1e-6;
    for (layer, var) in vars.iter().enumerate() {
        let original = var.as_tensor().copy()?;
        let flat_original = original.flatten_all()?.to_vec1::<f64>()?;
        for p in 0..sizes[layer] {
            let output_at = |delta: f64| -> candle_core::Result<Vec<Vec<f64>>> {
                let mut moved = flat_original.clone();
                moved[p] += delta;
                var.set(&Tensor::from_vec(moved, original.shape(), &device)?)?;
                net.forward_hooked(&input, false, None)?.to_vec2::<f64>()
            };
            let (plus, minus) = (output_at(h)?, output_at(-h)?);
            for b in 0..batch {
                for o in 0..3 {
                    jacobian[b][o][offsets[layer] + p] = (plus[b][o] - minus[b][o]) / (2.0 * h);
                }
            }
        }
        var.set(&original)?;
    }
    // The same R_b and r as `gauss_newton` draws.
    let a = seeded_normal(&Tensor::zeros((batch, 3, 3), DType::F64, &device)?, seed)?.to_vec3::<f64>()?;
    for m in 0..vars.len() {
        let r = seeded_normal(vars[m].as_tensor(), seed + 1 + m as u64)?.flatten_all()?.to_vec1::<f64>()?;
        // Σ_b ‖(J_bᵀ R_b J_b r)_l‖², one sample's product at a time.
        let mut norms = vec![0.0; vars.len()];
        for b in 0..batch {
            let mut product = vec![0.0; total];
            let jr: Vec<f64> =
                (0..3).map(|o| (0..sizes[m]).map(|p| jacobian[b][o][offsets[m] + p] * r[p]).sum()).collect();
            let u: Vec<f64> = (0..3)
                .map(|i| (0..3).map(|j| (a[b][i][j] + a[b][j][i]) / std::f64::consts::SQRT_2 * jr[j]).sum())
                .collect();
            for (p, value) in product.iter_mut().enumerate() {
                *value = (0..3).map(|o| jacobian[b][o][p] * u[o]).sum::<f64>();
            }
            for (l, norm) in norms.iter_mut().enumerate() {
                *norm += product[offsets[l]..offsets[l] + sizes[l]].iter().map(|v| v * v).sum::<f64>();
            }
        }
        for l in 0..vars.len() {
            let expected = norms[l] / batch as f64 / ((sizes[l] * sizes[m]) as f64).sqrt();
            let got = measured.blocks[l][m];
            assert!((got - expected).abs() <= 1e-5 * expected.abs(), "block ({l}, {m}): {got} vs explicit {expected}");
        }
    }
    Ok(())
}

/// Fig. 1 on a small budget: eq. (2) over the measured `E[(G_l r)^2]` of every layer of the
/// strided LeNet, over 18 setups (three widths, six seeds each) of 16 samples. The issue asks the
/// median in [0.8, 1.25]; the full run (100 setups) gives the figure in docs/.
#[test]
fn figure_1_median_ratio_is_near_one() -> candle_core::Result<()> {
    let variants = &variants::lenet_widths()[..3];
    let mut ratios = Vec::new();
    for setup in 0..18 {
        let gn = (variants[setup % 3].gauss_newton)(setup as u64, 16)?;
        ratios.extend(gn.scaling_ratios().into_iter().flatten());
    }
    let [q1, median, q3] = quartiles(&ratios).unwrap();
    println!("Fig. 1 small: {} ratios, median {median:.3}, quartiles {q1:.3} .. {q3:.3}", ratios.len());
    assert_eq!(ratios.len(), 18 * 7);
    assert!((0.8..=1.25).contains(&median), "median {median}");
    Ok(())
}

fn mean_blocks(variant: &variants::Variant, seeds: u64, batch: usize) -> candle_core::Result<GaussNewton> {
    let all: Vec<GaussNewton> = (0..seeds).map(|s| (variant.gauss_newton)(s, batch)).collect::<Result<_, _>>()?;
    Ok(GaussNewton::mean(&all).unwrap())
}

/// Fig. 2 on a small budget: the diagonal of the Gauss-Newton blocks is much more even under
/// geometric init than under fan_in (the issue asks at most half of fan_in's max/min).
#[test]
fn figure_2_geometric_diagonal_is_even() -> candle_core::Result<()> {
    let inits = variants::lenet_inits();
    let geometric = mean_blocks(&inits[0], 2, 32)?;
    let fan_in = mean_blocks(&inits[1], 2, 32)?;
    println!(
        "Fig. 2 small: diagonal max/min geometric {:.2}, fan_in {:.2}",
        geometric.diagonal_spread(),
        fan_in.diagonal_spread()
    );
    assert!(geometric.diagonal_spread() <= fan_in.diagonal_spread() / 2.0);
    Ok(())
}

/// The coordinate check on the MLP at three widths: under geometric init every layer's gamma is
/// the same at every width (the calculus predicts one value, 0.156, for all of them).
#[test]
fn coordinate_check_gammas_stay_flat_across_widths() -> candle_core::Result<()> {
    let widths = &variants::mlp_widths()[..3];
    let sweep: Vec<(usize, Diagnosis)> = widths
        .iter()
        .map(|v| {
            let all: Vec<Diagnosis> = (0..6).map(|s| (v.measure)(s, 128)).collect::<Result<_, _>>()?;
            Ok((v.width, Diagnosis::mean(&all).unwrap()))
        })
        .collect::<candle_core::Result<_>>()?;
    let check = CoordinateCheck::new("Mlp", sweep).unwrap();
    println!("coordinate check: gamma per layer across widths {:?}", check.gamma);
    println!("gamma max/min over all layers and widths {:.3}", check.gamma_spread());
    assert_eq!(check.widths, [16, 32, 64]);
    assert_eq!(check.gamma.len(), 3);
    assert!(check.gamma_spread() < 1.25, "gamma spread {}", check.gamma_spread());
    Ok(())
}

/// Too few widths, or diagnoses of different networks, are typed errors.
#[test]
fn coordinate_check_rejects_a_mixed_sweep() -> candle_core::Result<()> {
    let mlp = (variants::mlp_widths()[0].measure)(0, 8)?;
    let lenet = (variants::lenet_widths()[0].measure)(0, 2)?;
    assert!(CoordinateCheck::new("one", vec![(16, mlp.clone())]).is_err());
    let error = CoordinateCheck::new("mixed", vec![(16, mlp), (3, lenet)]).unwrap_err();
    assert!(error.to_string().contains("sweep one network family"), "{error}");
    Ok(())
}

/// Theorem 1 layer by layer on the strided LeNet (32 initializations x 32 samples): each weight
/// gradient is what assumption 2 gives from the layer's own input and output-gradient moments
/// (`x~dy`): within 1% for the fully connected layers, and about 6% above it for conv1, down1 and
/// conv2 (1.057, 1.058, 1.058 over 256 initializations; 1.03-1.07 between sets of 32, so the
/// bounds here are wide). That excess is the image border: conv1's zero padding makes activations smaller near
/// the border, and conv2 (no padding) makes gradients smaller there, while a convolution's weight
/// gradient sums products over positions, which exceed the product of position averages when
/// both are smaller at the same positions. (conv2's patches, for one, see the input map's
/// interior more than its border: their mean E[x²] is 1.058 of the map's.) down2's input and
/// output gradient are nearly flat, so it is near 1.
#[test]
fn strided_lenet_weight_gradients_follow_their_moments() -> candle_core::Result<()> {
    let lenet = variants::Variant::of::<networks::StridedLeNet>("x1", 6);
    let all: Vec<Diagnosis> = (0..32).map(|s| (lenet.measure)(s, 32)).collect::<Result<_, _>>()?;
    let diagnosis = Diagnosis::mean(&all).unwrap();
    for step in diagnosis.steps.iter().filter(|s| s.gamma.is_some()) {
        let correlation = step.gradient_correlation.unwrap();
        println!("{:<6} x~dy {correlation:.4}", step.layer);
        let (low, high) = if step.op == "linear" { (0.98, 1.02) } else { (0.95, 1.12) };
        assert!((low..high).contains(&correlation), "{}: x~dy {correlation}", step.layer);
    }
    Ok(())
}

//! Residual blocks (section 11, Appendix B): branch numerators, fixed scalars and gammas.

use scalenet_calculus::*;

fn conv(out: usize, kernel: usize, padding: usize) -> Op {
    Op::Conv2d { out_channels: out, kernel, stride: 1, padding, bias: true, groups: 1 }
}

fn block(beta: f64, main: Vec<Op>, shortcut: Option<Vec<Op>>) -> Op {
    Op::Residual(Residual {
        alpha: None,
        beta: Some(beta),
        main: main.into_iter().map(LayerSpec::new).collect(),
        shortcut: shortcut.map(|ops| ops.into_iter().map(LayerSpec::new).collect()),
    })
}

/// A small pre-activation ResNet: stem, an identity block, a downsampling block with a projection
/// shortcut (average pooling or a strided conv), a bottleneck, head.
fn resnet(beta: f64, branch_scaling: bool) -> NetworkSpec {
    resnet_with(beta, branch_scaling, vec![Op::AvgPool2d { kernel: 2, stride: 2 }, conv(32, 1, 0)])
}

fn resnet_with(beta: f64, branch_scaling: bool, shortcut: Vec<Op>) -> NetworkSpec {
    NetworkSpec::new(Shape::Image { channels: 3, height: 16, width: 16 })
        .with_typical_kernel(3)
        .with_branch_scaling(branch_scaling)
        .named("stem", conv(16, 3, 1))
        .named("res1", block(beta, vec![Op::Relu, conv(16, 3, 1), Op::Relu, conv(16, 3, 1)], None))
        .named(
            "res2",
            block(
                beta,
                vec![
                    Op::Relu,
                    Op::Conv2d { out_channels: 32, kernel: 2, stride: 2, padding: 0, bias: true, groups: 1 },
                    Op::Relu,
                    conv(32, 3, 1),
                ],
                Some(shortcut),
            ),
        )
        .named("res3", Op::Bottleneck { out_channels: 64, width: 16, stride: 2, beta })
        .layer(Op::Relu)
        .layer(Op::AvgPool2d { kernel: 4, stride: 4 })
        .layer(Op::Flatten)
        .named("fc", Op::Linear { out_features: 10, bias: true })
}

fn gammas(plan: &Plan) -> Vec<(String, f64)> {
    plan.weight_steps().map(|s| (s.path.to_string(), s.step.gamma.unwrap())).collect()
}

#[test]
fn every_weight_has_the_same_gamma_inside_and_outside_blocks() {
    for beta in [0.1, 0.5, 0.9] {
        let plan = analyze(&resnet(beta, true)).unwrap();
        let gammas = gammas(&plan);
        assert_eq!(gammas.len(), 11, "{gammas:?}");
        let reference = gammas[0].1;
        for (path, gamma) in &gammas {
            assert!(
                (gamma / reference - 1.0).abs() < 1e-9,
                "beta {beta}: {path} has gamma {gamma}, stem {reference}\n{plan}"
            );
        }
    }
}

fn strided_shortcut() -> Vec<Op> {
    vec![Op::Conv2d { out_channels: 32, kernel: 2, stride: 2, padding: 0, bias: true, groups: 1 }]
}

/// Without the branch numerators, the main branch's weights are off by 1/beta^2 (section 11:
/// sigma_R = beta^2 sigma, gamma = sigma_R / c^2), exactly so where no pooling sits in a branch
/// and positions are independent (the paper's model).
#[test]
fn without_branch_scaling_main_branch_gamma_is_off_by_beta_squared() {
    let beta: f64 = 0.5;
    let plan = analyze(&resnet_with(beta, false, strided_shortcut()).with_spatial_coherence(false)).unwrap();
    let gammas = gammas(&plan);
    let stem = gammas[0].1;
    let main = gammas.iter().find(|(p, _)| p == "res1.main.conv_3").unwrap().1;
    let shortcut = gammas.iter().find(|(p, _)| p == "res2.shortcut.conv_11").unwrap().1;
    assert!((main / stem - beta * beta).abs() < 1e-9, "{main} {stem}");
    assert!((shortcut / stem - (1.0 - beta * beta)).abs() < 1e-9, "{shortcut} {stem}");
}

/// The paper's `c = beta` (and `c = alpha` in a shortcut) is what the general numerator rule gives
/// in branches without pooling, with positions independent as the paper has them. (With pooling of
/// coherent input in a branch, sigma changes inside it and the rule departs from the closed form,
/// keeping gamma equal: see the test above. The global pool of the head correlates the gradient
/// over positions, which the coherence model compensates per layer on top.)
#[test]
fn main_branch_numerator_is_c_beta_and_shortcut_c_alpha() {
    let beta = 0.6;
    let plan = analyze(&resnet_with(beta, true, strided_shortcut()).with_spatial_coherence(false)).unwrap();
    let c = plan.c;
    let first_main = plan.step("res1.main.conv_3").unwrap().weight().unwrap().numerator;
    assert!((first_main / c - beta).abs() < 1e-9);
    let projection = plan.step("res2.shortcut.conv_11").unwrap().weight().unwrap().numerator;
    assert!((projection / c - 0.8).abs() < 1e-9, "{projection}");
}

/// Each branch ends with E[F(x)^2] = E[x^2], so a block keeps the second moment (alpha^2 + beta^2 = 1).
#[test]
fn blocks_keep_the_second_moment() {
    let plan = analyze(&resnet(0.5, true)).unwrap();
    for name in ["res1", "res2", "res3"] {
        let step = plan.step(name).unwrap();
        assert!((step.forward.second / step.input.second - 1.0).abs() < 1e-9, "{name}: {:?}", step.forward);
        let StepOp::Block { main, shortcut, .. } = &step.op else { panic!() };
        assert!((main.last().unwrap().forward.second / step.input.second - 1.0).abs() < 1e-9);
        if let Some(last) = shortcut.last() {
            assert!((last.forward.second / step.input.second - 1.0).abs() < 1e-9);
        }
    }
}

/// The bottleneck spells out section 11.1: ReLU, fixed scalar, bias, conv, three times, then a
/// learnable scalar starting at sqrt(c beta) and the branch-end correction; the downsampling
/// shortcut is avg_pool, bias, 1x1 conv.
#[test]
fn bottleneck_structure() {
    let plan = analyze(&resnet(0.5, true)).unwrap();
    let StepOp::Block { main, shortcut, .. } = &plan.step("res3").unwrap().op else { panic!() };
    let kinds: Vec<String> = main
        .iter()
        .map(|s| match &s.op {
            StepOp::FixedScale { .. } => "fixed".to_string(),
            StepOp::Declared { op, .. } => op.keyword().to_string(),
            StepOp::Block { .. } => "block".to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "relu", "fixed", "bias", "conv", "relu", "avg_pool", "fixed", "bias", "conv", "relu", "fixed", "bias",
            "conv", "scalar", "fixed"
        ]
    );
    let Some(ParamInit::Scalar { value, .. }) = main.iter().find(|s| s.name == "scale").unwrap().params else {
        panic!()
    };
    // sigma_R = beta^2 sigma after... the learnable scalar's numerator is c beta sqrt(sigma_l/sigma_0).
    assert!(value > 0.0);
    let shortcut_kinds: Vec<&str> = shortcut
        .iter()
        .filter_map(|s| match &s.op {
            StepOp::Declared { op, .. } => Some(op.keyword()),
            _ => None,
        })
        .collect();
    assert_eq!(shortcut_kinds, ["avg_pool", "bias", "conv"]);
}

#[test]
fn mismatched_branches_are_reported_with_a_fitting_shortcut() {
    let spec = NetworkSpec::new(Shape::Image { channels: 8, height: 8, width: 8 }).named(
        "res",
        block(
            0.5,
            vec![Op::Relu, Op::Conv2d { out_channels: 16, kernel: 2, stride: 2, padding: 0, bias: true, groups: 1 }],
            None,
        ),
    );
    let errors = analyze(&spec).unwrap_err();
    let messages: Vec<String> = errors.iter().map(|d| d.message.clone()).collect();
    assert!(messages[0].contains("shortcut { avg_pool(2), conv(16, kernel = 1) }"), "{messages:?}");
    assert_eq!(errors.0[0].location, Location::Layer { id: LayerId(0), field: LayerField::MainEnd });
    assert_eq!(errors.0[1].location, Location::Layer { id: LayerId(0), field: LayerField::ShortcutEnd });
}

#[test]
fn alpha_and_beta_must_agree() {
    let mut residual =
        Residual { alpha: Some(0.5), beta: Some(0.5), main: vec![LayerSpec::new(Op::Relu)], shortcut: None };
    let spec = |r: &Residual| NetworkSpec::new(Shape::Vector { features: 4 }).layer(Op::Residual(r.clone()));
    let errors = analyze(&spec(&residual)).unwrap_err();
    assert!(errors.0[0].message.contains("alpha^2 + beta^2 must be 1"), "{errors}");
    residual.alpha = None;
    residual.beta = Some(1.5);
    assert!(analyze(&spec(&residual)).unwrap_err().0[0].message.contains("`beta` must lie in (0, 1]"));
}

/// The second mismatch error points at the shortcut's last layer by its pre-order index, counting
/// the layers of a block nested earlier in the shortcut.
#[test]
fn mismatch_points_at_the_last_shortcut_layer_after_a_nested_block() {
    let nested = block(0.5, vec![Op::Relu, conv(8, 3, 1)], None);
    let spec = NetworkSpec::new(Shape::Image { channels: 8, height: 8, width: 8 }).named(
        "res",
        block(
            0.5,
            vec![Op::Relu, Op::Conv2d { out_channels: 16, kernel: 2, stride: 2, padding: 0, bias: true, groups: 1 }],
            Some(vec![nested, conv(8, 1, 0)]),
        ),
    );
    let errors = analyze(&spec).unwrap_err();
    // Pre-order: 0 res, 1 relu, 2 conv, 3 nested block, 4 relu, 5 conv, 6 the shortcut's last conv.
    assert_eq!(errors.0[1].location, Location::Layer { id: LayerId(6), field: LayerField::Kind }, "{errors}");
}

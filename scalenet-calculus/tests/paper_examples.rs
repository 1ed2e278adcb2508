//! The paper's worked examples, and the properties the calculus promises, with plain numbers.

use scalenet_calculus::*;

fn conv(out: usize, kernel: usize, padding: usize) -> Op {
    Op::Conv2d { out_channels: out, kernel, stride: 1, padding, bias: true, groups: 1 }
}

fn linear(out: usize) -> Op {
    Op::Linear { out_features: out, bias: true }
}

fn image(channels: usize, size: usize) -> Shape {
    Shape::Image { channels, height: size, width: size }
}

fn fixed_scalars(plan: &Plan) -> Vec<(f64, Vec<ScaleReason>)> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.op {
            StepOp::FixedScale { factor, reasons } => Some((*factor, reasons.clone())),
            _ => None,
        })
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-300)
}

/// Section 6.2: "if the typical kernel size is 1, then a 3x3 convolution would be preceded with a
/// sqrt(1/3) fixed scaling factor".
#[test]
fn section_6_2_scalar_before_a_3x3_conv_when_typical_kernel_is_1() {
    let spec = NetworkSpec::new(image(16, 8))
        .with_typical_kernel(1)
        .named("a", conv(16, 1, 0))
        .layer(Op::Relu)
        .named("b", conv(16, 3, 0))
        .layer(Op::Relu)
        .named("c", conv(16, 1, 0));
    let plan = analyze(&spec).unwrap();
    let scalars = fixed_scalars(&plan);
    let before_3x3 = scalars.iter().find(|(_, r)| r.contains(&ScaleReason::Kernel { kernel: 3, typical: 1 })).unwrap();
    assert!(close(before_3x3.0, (1.0f64 / 3.0).sqrt(), 1e-12), "{}", before_3x3.0);
    // The 1x1 conv after it needs no correction: the chain is back on E[y^2] = c/sqrt(n).
    let between_b_and_c = plan.steps.iter().position(|s| s.name == "c").unwrap() - 1;
    assert!(matches!(plan.steps[between_b_and_c].op, StepOp::Declared { op: Op::Relu, .. }));
}

/// Section 8.1: "the input planes are the 3 color channels and the kernel size is k = 3" gives the
/// input scalar 1/(n0 k^2)^(1/4) = 1/27^(1/4) = 0.439 and E[x0^2] = 1/sqrt(27) = 0.19.
#[test]
fn section_8_1_input_scalar_for_3_channels_and_3x3_kernels() {
    let spec = NetworkSpec::new(image(3, 32)).named("conv", conv(16, 3, 0)).layer(Op::Relu);
    let plan = analyze(&spec).unwrap();
    let (factor, reasons) = &fixed_scalars(&plan)[0];
    assert_eq!(reasons, &vec![ScaleReason::Input]);
    assert!(close(*factor, 27f64.powf(-0.25), 1e-12));
    assert!(close(*factor, 0.4387, 1e-3));
    assert!(close(plan.steps[0].forward.second, 1.0 / 27f64.sqrt(), 1e-12));
    // The condition it comes from: the first layer's weight and bias gammas are equal.
    let first = plan.step_of_layer(0).unwrap();
    assert!(close(first.gamma.unwrap(), first.bias_gamma.unwrap(), 1e-12));
}

/// With zero padding the input scalar also undoes the padding's loss of moment (coverage), which
/// keeps the weight and bias gammas of the first layer equal.
#[test]
fn input_scalar_accounts_for_padding_coverage() {
    let spec = NetworkSpec::new(image(3, 32)).named("conv", conv(16, 3, 1));
    let plan = analyze(&spec).unwrap();
    let coverage = (94.0f64 / 96.0).powi(2);
    assert!(close(fixed_scalars(&plan)[0].0, 27f64.powf(-0.25) / coverage.sqrt(), 1e-12));
    let first = plan.step_of_layer(0).unwrap();
    assert!(close(first.gamma.unwrap(), first.bias_gamma.unwrap(), 1e-12));
}

/// Section 7, eq. (6): with geometric init, c = 2/k and all kernels equal, each conv+ReLU maps
/// E[x^2] to sqrt(n_l/n_{l+1}) E[x^2], so E[x_L^2] = sqrt(n0/nL) E[x0^2] whatever lies between.
#[test]
fn section_7_telescoping_output_moment() {
    let widths = [4usize, 8, 32, 12, 5];
    let mut spec = NetworkSpec::new(image(widths[0], 24));
    for &w in &widths[1..] {
        spec = spec.layer(conv(w, 3, 0)).layer(Op::Relu);
    }
    let plan = analyze(&spec.with_fixed_scalars(false)).unwrap();
    assert!(fixed_scalars(&plan).is_empty());
    let expected = (widths[0] as f64 / widths[4] as f64).sqrt(); // E[x0^2] = 1
    assert!(close(plan.steps.last().unwrap().forward.second, expected, 1e-12));
    // and every intermediate ReLU output follows sqrt(n0/nl)
    let relu_outputs: Vec<f64> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.op, StepOp::Declared { op: Op::Relu, .. }))
        .map(|s| s.forward.second)
        .collect();
    for (l, m) in relu_outputs.iter().enumerate() {
        assert!(close(*m, (widths[0] as f64 / widths[l + 1] as f64).sqrt(), 1e-12));
    }
}

/// Appendix C/Theorem 1: gamma = E[dW^2]/E[W^2] = sigma / (n_in n_out k^2 E[W^2]^2), so with
/// geometric init every weight layer has gamma = sigma / c^2, whatever its kernel and widths.
#[test]
fn geometric_init_equalizes_gamma_across_kernels_and_widths() {
    let spec = NetworkSpec::new(image(3, 32))
        .with_typical_kernel(3)
        .layer(conv(64, 3, 1))
        .layer(Op::Relu)
        .layer(conv(16, 5, 2))
        .layer(Op::Relu)
        .layer(Op::Conv2d { out_channels: 32, kernel: 2, stride: 2, padding: 0, bias: true, groups: 1 })
        .layer(Op::Relu)
        .layer(Op::Flatten)
        .layer(linear(100))
        .layer(Op::Relu)
        .layer(linear(10));
    let plan = analyze(&spec).unwrap();
    let gammas: Vec<f64> = plan.weight_steps().map(|s| s.step.gamma.unwrap()).collect();
    assert_eq!(gammas.len(), 5);
    for g in &gammas {
        assert!(close(*g, gammas[0], 1e-9), "{gammas:?}");
    }
    // Biases are balanced against weights everywhere (section 8).
    for s in plan.weight_steps() {
        assert!(close(s.step.bias_gamma.unwrap(), gammas[0], 1e-9), "{}", s.path);
    }
    // The output std hits the target (section 7; the default, logits at unit scale)...
    assert_eq!(spec.output_std, 1.0);
    assert!(close(plan.predicted_output_std(), spec.output_std, 1e-12));
    // ... or, with `varying_output_std`, what varies with the input does, and the per-logit
    // offsets that ReLU means leave come on top of it.
    let target = spec.output_std;
    let varying = analyze(&spec.with_varying_output_std(true)).unwrap();
    assert!(close(varying.predicted_input_dependent_std(), target, 1e-12));
    assert!(varying.predicted_output_std() > target * 1.05, "{}", varying.predicted_output_std());
}

/// Average pooling after a ReLU keeps the mean: the scaling factor grows by 1 + (k^2 - 1)/pi, and
/// the layers after it get c_l = c sqrt(sigma_l/sigma_0) so that gamma stays equal. (The paper's
/// model: with `spatial_coherence`, the borders and the cross terms change c_l further.)
#[test]
fn pooling_after_relu_raises_sigma_and_the_numerator_compensates() {
    let spec = NetworkSpec::new(image(3, 32))
        .with_spatial_coherence(false)
        .with_typical_kernel(5)
        .named("conv1", conv(6, 5, 2))
        .layer(Op::Relu)
        .layer(Op::AvgPool2d { kernel: 2, stride: 2 })
        .named("conv2", conv(16, 5, 0));
    let plan = analyze(&spec).unwrap();
    let (c1, c2) = (plan.step_of_layer(0).unwrap(), plan.step_of_layer(3).unwrap());
    let ratio = 1.0 + 3.0 / std::f64::consts::PI;
    assert!(close(c2.weight().unwrap().numerator / c1.weight().unwrap().numerator, ratio.sqrt(), 1e-9));
    assert!(close(c2.gamma.unwrap(), c1.gamma.unwrap(), 1e-9));
}

/// Baselines go through the same code path: fan-in makes gamma proportional to n_in/n_out, so on
/// the paper's 3-layer MLP the layers' gammas spread by a factor of about 3.
#[test]
fn fan_in_init_spreads_gamma_by_fan_ratio() {
    let mlp = |init| {
        NetworkSpec::new(Shape::Vector { features: 784 })
            .with_init(init)
            .layer(linear(384))
            .layer(Op::Relu)
            .layer(linear(64))
            .layer(Op::Relu)
            .layer(linear(10))
    };
    let gammas =
        |init| -> Vec<f64> { analyze(&mlp(init)).unwrap().weight_steps().map(|s| s.step.gamma.unwrap()).collect() };
    let spread = |g: &[f64]| g.iter().cloned().fold(0.0, f64::max) / g.iter().cloned().fold(f64::INFINITY, f64::min);
    let fan_in = gammas(InitScheme::FanIn);
    // gamma = sigma / (n_in n_out E[W^2]^2) = sigma n_in / (4 n_out)
    assert!(close(fan_in[1] / fan_in[0], (384.0 / 64.0) / (784.0 / 384.0), 1e-9));
    assert!(close(fan_in[2] / fan_in[0], (64.0 / 10.0) / (784.0 / 384.0), 1e-9));
    assert!(spread(&fan_in) > 3.0);
    assert!(close(spread(&gammas(InitScheme::Geometric)), 1.0, 1e-9));
    // Fan-out: gamma proportional to n_out / n_in.
    let fan_out = gammas(InitScheme::FanOut);
    assert!(close(fan_out[1] / fan_out[0], (64.0 / 384.0) / (384.0 / 784.0), 1e-9));
}

/// Leaky ReLU with slope a: the gain 2 becomes 2/(1 + a^2) and the chain needs no scalars.
#[test]
fn leaky_relu_gain_keeps_the_chain_without_scalars() {
    let spec = NetworkSpec::new(Shape::Vector { features: 64 })
        .layer(linear(64))
        .layer(Op::LeakyRelu { slope: 0.2 })
        .layer(linear(64))
        .layer(Op::LeakyRelu { slope: 0.2 })
        .layer(linear(64));
    let plan = analyze(&spec).unwrap();
    assert!(close(plan.gain, 2.0 / 1.04, 1e-12));
    let scalars = fixed_scalars(&plan);
    // only the input and output scalars
    assert_eq!(scalars.len(), 2, "{scalars:?}");
}

/// A learnable scalar starts at sqrt(c) (Appendix E) so its gamma equals the weights'.
#[test]
fn learnable_scalar_has_the_weights_gamma() {
    let spec = NetworkSpec::new(Shape::Vector { features: 32 })
        .layer(linear(64))
        .layer(Op::Relu)
        .named("u", Op::Scalar)
        .layer(linear(16));
    let plan = analyze(&spec).unwrap();
    let scalar = plan.step("u").unwrap();
    match scalar.params {
        Some(ParamInit::Scalar { value, fixed }) => {
            assert!(close(value, plan.c.sqrt(), 1e-12));
            assert!(close(value * fixed, 1.0, 1e-12));
        }
        _ => panic!("scalar params"),
    }
    let weight_gamma = plan.weight_steps().next().unwrap().step.gamma.unwrap();
    assert!(close(scalar.gamma.unwrap(), weight_gamma, 1e-9));
}

/// The activation scaling factor is the same at every op boundary when no pooling follows a ReLU
/// (Table 1: linear, conv, ReLU, scalars, dropout all maintain it).
#[test]
fn scaling_factor_is_constant_through_maintaining_ops() {
    let spec = NetworkSpec::new(image(3, 16))
        .layer(conv(8, 3, 1))
        .layer(Op::Relu)
        .layer(Op::Dropout { p: 0.3 })
        .layer(Op::Scale { factor: 2.5 })
        .layer(Op::Conv2d { out_channels: 8, kernel: 2, stride: 2, padding: 0, bias: true, groups: 1 })
        .layer(Op::Relu)
        .layer(Op::Flatten)
        .layer(linear(10));
    let plan = analyze(&spec).unwrap();
    let first = plan.steps[0].scaling;
    for step in &plan.steps {
        assert!(close(step.scaling, first, 1e-9), "{step:?}");
    }
}

/// A user's own `scale(f)` is never cancelled by an inserted scalar: it multiplies the output std.
#[test]
fn user_scale_is_kept() {
    let base = NetworkSpec::new(Shape::Vector { features: 20 }).layer(linear(30)).layer(Op::Relu);
    let plain = analyze(&base.clone().layer(linear(5))).unwrap();
    let scaled = analyze(&base.layer(Op::Scale { factor: 3.0 }).layer(linear(5))).unwrap();
    assert!(close(scaled.predicted_output_std(), 3.0 * plain.predicted_output_std(), 1e-12));
}

#[test]
fn unnamed_parameter_layers_get_stable_names() {
    let spec = NetworkSpec::new(Shape::Vector { features: 4 })
        .layer(linear(3))
        .layer(Op::Relu)
        .layer(Op::Bias)
        .named("head", linear(2));
    let plan = analyze(&spec).unwrap();
    let names: Vec<&str> = plan.steps.iter().filter(|s| s.params.is_some()).map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["linear_0", "bias_2", "head"]);
}

/// A network without images has no positions to correlate and no borders: the coherence model
/// leaves its plan exactly as the paper's model has it.
#[test]
fn coherence_leaves_vector_networks_alone() {
    let mlp = NetworkSpec::new(Shape::Vector { features: 784 })
        .layer(linear(384))
        .layer(Op::Relu)
        .layer(linear(64))
        .layer(Op::Relu)
        .layer(linear(10));
    let coherent = analyze(&mlp).unwrap();
    let independent = analyze(&mlp.clone().with_spatial_coherence(false)).unwrap();
    assert_eq!(coherent.steps, independent.steps);
    assert!(coherent.weight_steps().all(|s| s.step.coherence == Some(1.0)));
}

/// With average pooling the cross terms between positions change gammas by factors (the pooled
/// LeNet's conv2 by 2.4, conv1's bias by 6.9, as measured in `docs/coherence.md`); the planner
/// compensates them, so every weight and every bias still has the same predicted gamma.
#[test]
fn the_planner_compensates_coherence_after_pooling() {
    let spec = NetworkSpec::new(image(3, 32))
        .with_typical_kernel(5)
        .named("conv1", conv(6, 5, 2))
        .layer(Op::Relu)
        .layer(Op::AvgPool2d { kernel: 2, stride: 2 })
        .named("conv2", conv(16, 5, 0))
        .layer(Op::Relu)
        .layer(Op::AvgPool2d { kernel: 2, stride: 2 })
        .layer(Op::Flatten)
        .named("fc1", linear(120))
        .layer(Op::Relu)
        .named("fc2", linear(10));
    let plan = analyze(&spec).unwrap();
    let conv2 = plan.step("conv2").unwrap();
    assert!(conv2.coherence.unwrap() > 2.0, "{plan}");
    assert!(plan.step("conv1").unwrap().bias_coherence.unwrap() > 5.0, "{plan}");
    let gamma = plan.step("fc2").unwrap().gamma.unwrap();
    for s in plan.weight_steps() {
        assert!(close(s.step.gamma.unwrap(), gamma, 1e-9), "{}: {plan}", s.path);
        assert!(close(s.step.bias_gamma.unwrap(), gamma, 1e-9), "{} bias: {plan}", s.path);
    }
    // The paper's model predicts them equal too, but measures them 2.5 times apart.
    let paper = analyze(&spec.with_spatial_coherence(false)).unwrap();
    assert!(paper.steps.iter().all(|s| s.gamma.is_none_or(|g| close(g, gamma, 1e-9))), "{paper}");
}

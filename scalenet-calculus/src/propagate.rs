//! Moments through built steps: one op ([`transfer`]), a chain, the sum of a residual block's
//! branches, and the planner's second pass, which predicts every step's forward and backward
//! moments, scaling factor and gammas on the real chain (Appendices A-B, Theorem 1, eq. 7).

use crate::coherence::Covariance;
use crate::moments::{Moments, Transfer};
use crate::plan::{ParamInit, Step, StepOp};
use crate::registry::weight::window;
use crate::registry::{Op, Role};

/// `alpha S + beta F` of independent branches.
pub(crate) fn combine(alpha: f64, shortcut: Moments, beta: f64, main: Moments) -> Moments {
    let cross = 2.0 * alpha * beta * shortcut.mean * main.mean;
    // Each channel's variance is the sum of the branches' (their weights are independent).
    let (a, b) = (alpha * alpha * shortcut.variance(), beta * beta * main.variance());
    let dispersion =
        if a + b > 0.0 { (a * a * shortcut.dispersion + b * b * main.dispersion) / (a + b).powi(2) } else { 0.0 };
    Moments {
        second: alpha * alpha * shortcut.second + beta * beta * main.second + cross,
        mean: alpha * shortcut.mean + beta * main.mean,
        coherent: alpha * alpha * shortcut.coherent + beta * beta * main.coherent + cross,
        fixed: alpha * alpha * shortcut.fixed + beta * beta * main.fixed + cross,
        dispersion,
        correlation: shortcut.correlation.mixed(
            alpha * alpha * (shortcut.second - shortcut.coherent).max(0.0),
            &main.correlation,
            beta * beta * (main.second - main.coherent).max(0.0),
        ),
        nonnegative: shortcut.nonnegative && main.nonnegative,
    }
}

/// How the moments through a step are computed.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// The real network.
    Actual,
    /// Without the user's own `scale` factors (only their sign): the chain the inserted scalars
    /// are computed on, so that no inserted scalar cancels a factor the user asked for.
    Nominal,
}

/// Moments through one step.
pub(crate) fn transfer(step: &Step, input: Moments, mode: Mode) -> Transfer {
    match &step.op {
        StepOp::FixedScale { factor, .. } => Transfer::scale(input, *factor),
        StepOp::Block { alpha, beta, main, shortcut, .. } => {
            let (main_out, main_gain) = chain_transfer(main, input, mode);
            let (shortcut_out, shortcut_gain) = chain_transfer(shortcut, input, mode);
            Transfer {
                output: combine(*alpha, shortcut_out, *beta, main_out),
                backward_gain: alpha * alpha * shortcut_gain + beta * beta * main_gain,
            }
        }
        // The nominal chain keeps only the sign of the user's own factors.
        StepOp::Declared { op: Op::Scale { factor }, .. } if mode == Mode::Nominal => {
            Transfer::scale(input, factor.signum())
        }
        StepOp::Declared { op, .. } => (op.def().transfer)(op, step, input),
    }
}

/// Output moments of a chain and its backward gain `E[dx^2]/E[dy^2]`.
pub(crate) fn chain_transfer(steps: &[Step], input: Moments, mode: Mode) -> (Moments, f64) {
    steps.iter().fold((input, 1.0), |(moments, gain), step| {
        let t = transfer(step, moments, mode);
        (t.output, gain * t.backward_gain)
    })
}

/// Sets each step's input and output moments and backward gain from `input`; returns the
/// output's moments and the chain's backward gain.
pub(crate) fn predict_forward(steps: &mut [Step], input: Moments) -> (Moments, f64) {
    let mut current = input;
    let mut chain_gain = 1.0;
    for step in steps {
        step.input = current;
        let t = match &mut step.op {
            StepOp::Block { alpha, beta, main, shortcut, .. } => {
                let (alpha, beta) = (*alpha, *beta);
                let (main_out, main_gain) = predict_forward(main, current);
                let (shortcut_out, shortcut_gain) = predict_forward(shortcut, current);
                Transfer {
                    output: combine(alpha, shortcut_out, beta, main_out),
                    backward_gain: alpha * alpha * shortcut_gain + beta * beta * main_gain,
                }
            }
            _ => transfer(step, current, Mode::Actual),
        };
        (step.forward, step.backward_gain) = (t.output, t.backward_gain);
        chain_gain *= t.backward_gain;
        current = step.forward;
    }
    (current, chain_gain)
}

/// Sets each step's backward moment, scaling factor and gammas; returns `E[dx^2]` at the input.
pub(crate) fn predict_backward(steps: &mut [Step], output_gradient: f64) -> f64 {
    let mut gradient = output_gradient;
    for step in steps.iter_mut().rev() {
        step.backward = gradient;
        step.scaling = step.output_shape.numel() as f64 * gradient * step.forward.second;
        let input_gradient = match &mut step.op {
            StepOp::Block { alpha, beta, main, shortcut, .. } => {
                let (alpha, beta) = (*alpha, *beta);
                let through_main = predict_backward(main, beta * beta * gradient);
                let through_shortcut = predict_backward(shortcut, alpha * alpha * gradient);
                through_main + through_shortcut
            }
            _ => gradient * step.backward_gain,
        };
        let dy = gradient;
        match &step.params {
            Some(ParamInit::Weight(weight)) => {
                let g = &weight.geometry;
                let weight_gradient =
                    g.area_out as f64 * g.coverage * weight.borders.gradient * weight.seen(step.input).second * dy;
                step.gamma = Some(weight_gradient / weight.second_moment);
                if weight.bias {
                    step.bias_gamma = Some(g.area_out as f64 * dy / step.forward.second);
                }
            }
            Some(ParamInit::Scalar { value, fixed }) => {
                let scalar_gradient = fixed * fixed * step.input_shape.numel() as f64 * step.input.second * dy;
                step.gamma = Some(scalar_gradient / (value * value));
            }
            Some(ParamInit::Bias { .. }) => {
                step.bias_gamma = Some(step.output_shape.area() as f64 * dy / step.forward.second);
            }
            None => {}
        }
        gradient = input_gradient;
    }
    gradient
}

/// Sets each step's coherence factors from the covariance between positions of the gradient at
/// the chain's output (see [`crate::coherence`]), and, where `correct` is set, multiplies the
/// step's gammas by them; returns the covariance at the chain's input. Runs after
/// [`predict_forward`], whose input moments the activations' masks and the weights' inputs use.
pub(crate) fn predict_coherence(steps: &mut [Step], output_gradient: Covariance, correct: bool) -> Covariance {
    predict_coherence_with(steps, output_gradient, Vec::new(), correct).0
}

/// How the gradient that reaches a point of the chain depends on the signal there, through the
/// first ReLU downstream (before any weight layer, whose independent weights end it).
///
/// The calculus takes a layer's input and the gradient at its output to be independent. They are
/// not in one direction: the weight row `w` itself. `w . dW = sum_p z(p) dz(p)` for the layer's
/// output `z`, and where `z` reaches a ReLU's input `S` as its part `v` (through scalars, pooling
/// and residual sums), `sum_p z dz = sum_q v(q) 1[S(q) > 0] g(q)` with `g` the gradient at the
/// ReLU's output: `v 1[S > 0]` has the mean `Cov(v, S) p_S(0)` (Stein's lemma, `p_S` the
/// density of `S`), the same at every position, and a coherent `g` sums it over the map. So the
/// row's own direction gets `Delta = E[v 1[S > 0]]^2 sum_{q != q'} K_g(q - q')` more than
/// independence gives, and `E[dW^2]`, the mean over the `N` directions of the row,
/// `Delta / (N |w|^2)`: `(kappa_g - 1) / (pi N)` of the independent value for a ReLU right after
/// the layer, `kappa_g` the gradient's coherence over the map.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaskDependence {
    /// `(1 - a) Var(S) p_S(0)`, for a (leaky) ReLU of slope `a`: `E[v 1[S > 0]]` for `v = S`.
    base: f64,
    /// `sum_{q != q'} K_g(q - q')`, the cross terms of the gradient at the ReLU's output.
    cross: f64,
    /// The share of `Var(S)` that the signal at this point of the chain makes.
    share: f64,
}

impl MaskDependence {
    fn at_activation(input: &Moments, slope: f64, gradient: &Covariance) -> Option<Self> {
        let cross = gradient.sum_over_pairs() - gradient.area() * gradient.second();
        let density = crate::moments::density_at_zero(input);
        (cross > 0.0 && density > 0.0).then_some(MaskDependence {
            base: (1.0 - slope) * input.variance() * density,
            cross,
            share: 1.0,
        })
    }

    fn with_share(self, factor: f64) -> Self {
        MaskDependence { share: self.share * factor, ..self }
    }

    /// `Delta` for the signal at this point.
    fn excess(&self) -> f64 {
        (self.share * self.base).powi(2) * self.cross
    }
}

fn predict_coherence_with(
    steps: &mut [Step],
    output_gradient: Covariance,
    output_dependence: Vec<MaskDependence>,
    correct: bool,
) -> (Covariance, Vec<MaskDependence>) {
    let mut gradient = output_gradient;
    let mut dependence = output_dependence;
    for step in steps.iter_mut().rev() {
        let (input_gradient, input_dependence) = match &mut step.op {
            StepOp::Block { alpha, beta, main, shortcut, .. } => {
                let (alpha, beta) = (*alpha, *beta);
                let total = step.forward.variance();
                let branch = |factor: f64, chain: &[Step]| {
                    let output = chain.last().map_or(step.input, |s| s.forward);
                    let share = if total > 0.0 { factor * factor * output.variance() / total } else { 0.0 };
                    dependence.iter().map(|d| d.with_share(share)).collect::<Vec<_>>()
                };
                let (main_dependence, shortcut_dependence) = (branch(beta, main), branch(alpha, shortcut));
                let (through_main, from_main) =
                    predict_coherence_with(main, gradient.scaled(beta), main_dependence, correct);
                let (through_shortcut, from_shortcut) =
                    predict_coherence_with(shortcut, gradient.scaled(alpha), shortcut_dependence, correct);
                // Each ReLU the branches lead to counts on its own.
                (through_main.plus(&through_shortcut), [from_main, from_shortcut].concat())
            }
            StepOp::FixedScale { factor, .. } => (gradient.scaled(*factor), dependence.clone()),
            StepOp::Declared { op, .. } => {
                let passed = match op.def().role {
                    // Through a ReLU the signal before it reaches later ones only nonlinearly.
                    Role::Activation => op
                        .activation_slope()
                        .and_then(|slope| MaskDependence::at_activation(&step.input, slope, &gradient))
                        .into_iter()
                        .collect(),
                    Role::Plain | Role::Pooling | Role::Reshape | Role::Bias | Role::Scalar => dependence.clone(),
                    Role::Weight | Role::Block | Role::Unscaled | Role::Rejected => Vec::new(),
                };
                (declared_gradient(step, &gradient), passed)
            }
        };
        let (weight, bias) = match (&step.op, &step.params) {
            (StepOp::Declared { op, .. }, Some(ParamInit::Weight(w))) => {
                let mut factor = gradient.weight_coherence(
                    &w.seen(step.input),
                    if w.centred { step.input.mean } else { 0.0 },
                    window(op),
                    step.input_shape,
                );
                // The row's own direction (see `MaskDependence`), over the independent E[dW^2].
                if let Some(gamma) = step.gamma {
                    let n = (w.geometry.fan_in * w.geometry.kernel * w.geometry.kernel) as f64;
                    let independent = gamma * w.second_moment;
                    if independent > 0.0 {
                        let excess: f64 = dependence.iter().map(MaskDependence::excess).sum();
                        factor += excess / (n * n * w.second_moment * independent);
                    }
                }
                (Some(factor), w.bias.then(|| gradient.bias_coherence()))
            }
            (_, Some(ParamInit::Scalar { .. })) => (Some(gradient.product_coherence(&step.input)), None),
            (_, Some(ParamInit::Bias { .. })) => (None, Some(gradient.bias_coherence())),
            _ => (None, None),
        };
        step.coherence = weight;
        step.bias_coherence = bias;
        if correct {
            step.gamma = step.gamma.zip(weight).map(|(gamma, factor)| gamma * factor).or(step.gamma);
            step.bias_gamma = step.bias_gamma.zip(bias).map(|(gamma, factor)| gamma * factor).or(step.bias_gamma);
        }
        gradient = input_gradient;
        dependence = input_dependence;
    }
    (gradient, dependence)
}

fn declared_gradient(step: &Step, gradient: &Covariance) -> Covariance {
    match &step.op {
        StepOp::Declared { op, .. } => (op.def().gradient)(op, step, gradient),
        _ => unreachable!("called on declared steps"),
    }
}

#[cfg(test)]
mod tests {
    use crate::{analyze, NetworkSpec, Op, Shape};
    use std::f64::consts::PI;

    /// A convolution of white input right before a ReLU and a global average pool: independence
    /// gives `kappa = 1` (no offsets, white positions), and the row's own direction adds
    /// `(kappa_g - 1) / (pi N)`, where the pool makes the gradient after the ReLU the same at all
    /// `A` positions (`kappa_g = A`): `1 + 35 / (27 pi)` for a 3x3 conv of 3 channels on 8x8.
    #[test]
    fn a_row_before_a_relu_and_a_global_pool_gets_its_own_direction() {
        let conv_relu_then = |head: Op| {
            NetworkSpec::new(Shape::Image { channels: 3, height: 8, width: 8 })
                .named("conv", Op::Conv2d { out_channels: 4, kernel: 3, stride: 1, padding: 0, bias: false, groups: 1 })
                .layer(Op::Relu)
                .layer(head)
                .named("fc", Op::Linear { out_features: 2, bias: false })
        };
        let plan = analyze(&conv_relu_then(Op::GlobalAvgPool)).unwrap();
        let conv = plan.weight_steps().next().unwrap();
        let expected = 1.0 + 35.0 / (27.0 * PI);
        assert!((conv.step.coherence.unwrap() - expected).abs() < 1e-9, "{:?} vs {expected}", conv.step.coherence);
        // Without the ReLU's coherent gradient (a flattened head) there is nothing to add.
        let plan = analyze(&conv_relu_then(Op::Flatten)).unwrap();
        assert!((plan.weight_steps().next().unwrap().step.coherence.unwrap() - 1.0).abs() < 1e-9);
    }
}

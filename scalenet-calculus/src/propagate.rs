//! Moments through built steps: one op ([`transfer`]), a chain, the sum of a residual block's
//! branches, and the planner's second pass, which predicts every step's forward and backward
//! moments, scaling factor and gammas on the real chain (Appendices A-B, Theorem 1, eq. 7).

use crate::coherence::Covariance;
use crate::moments::{Moments, Transfer};
use crate::plan::{ParamInit, Step, StepOp};
use crate::registry::weight::window;
use crate::registry::Op;

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
        dispersion,
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

/// Sets each step's input and output moments from `input`; returns the output's.
pub(crate) fn predict_forward(steps: &mut [Step], input: Moments) -> Moments {
    let mut current = input;
    for step in steps {
        step.input = current;
        step.forward = match &mut step.op {
            StepOp::Block { alpha, beta, main, shortcut, .. } => {
                let (alpha, beta) = (*alpha, *beta);
                let main_out = predict_forward(main, current);
                let shortcut_out = predict_forward(shortcut, current);
                combine(alpha, shortcut_out, beta, main_out)
            }
            _ => transfer(step, current, Mode::Actual).output,
        };
        current = step.forward;
    }
    current
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
            _ => gradient * transfer(step, step.input, Mode::Actual).backward_gain,
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
    let mut gradient = output_gradient;
    for step in steps.iter_mut().rev() {
        let input_gradient = match &mut step.op {
            StepOp::Block { alpha, beta, main, shortcut, .. } => {
                let (alpha, beta) = (*alpha, *beta);
                let through_main = predict_coherence(main, gradient.scaled(beta), correct);
                let through_shortcut = predict_coherence(shortcut, gradient.scaled(alpha), correct);
                through_main.plus(&through_shortcut)
            }
            StepOp::FixedScale { factor, .. } => gradient.scaled(*factor),
            StepOp::Declared { .. } => declared_gradient(step, &gradient),
        };
        let (weight, bias) = match (&step.op, &step.params) {
            (StepOp::Declared { op, .. }, Some(ParamInit::Weight(w))) => (
                Some(gradient.weight_coherence(
                    &w.seen(step.input),
                    if w.centred { step.input.mean } else { 0.0 },
                    window(op),
                    step.input_shape,
                )),
                w.bias.then(|| gradient.bias_coherence()),
            ),
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
    }
    gradient
}

fn declared_gradient(step: &Step, gradient: &Covariance) -> Covariance {
    match &step.op {
        StepOp::Declared { op, .. } => (op.def().gradient)(op, step, gradient),
        _ => unreachable!("called on declared steps"),
    }
}

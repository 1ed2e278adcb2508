//! The borders' pass over a built plan: the profile of every map forward and of every gradient
//! backward (see [`crate::borders`] for the mathematics of one window), and each weight layer's
//! border factors from them. Each kind's [`BorderRule`] says what it does to a profile.

use crate::borders::{normalized, weight_factors, window_backward, window_forward, BorderFactors, Profile};
use crate::geometry::Window;
use crate::plan::{child_path, Step, StepOp};
use crate::registry::weight::window;
use crate::registry::BorderRule;
use crate::spec::Op;

/// The profile at a step's output from the one at its input.
fn forward(step: &Step, input: Option<&Profile>) -> Option<Profile> {
    let output = Profile::uniform(step.output_shape)?;
    let input = input?;
    Some(match &step.op {
        StepOp::Declared { op, .. } => match op.def().borders {
            BorderRule::Window => {
                let window = pool_or_weight_window(op);
                let (h, w) = (output.rows.len(), output.cols.len());
                Profile {
                    rows: normalized(window_forward(window, &input.rows, h)),
                    cols: normalized(window_forward(window, &input.cols, w)),
                }
            }
            BorderRule::Pointwise => input.clone(),
            BorderRule::Collapses => output,
            BorderRule::Branches | BorderRule::NotPlanned => unplanned(op),
        },
        StepOp::FixedScale { .. } => input.clone(),
        StepOp::Block { alpha, beta, main, shortcut, .. } => {
            let main_out = chain_forward(main, Some(input)).unwrap_or(output.clone());
            let shortcut_out = chain_forward(shortcut, Some(input)).unwrap_or(output);
            // Both branches end at the block input's second moment.
            Profile::mix(&shortcut_out, alpha * alpha / (alpha * alpha + beta * beta), &main_out)
        }
    })
}

/// A declared step of a kind the planner never makes one of: blocks become [`StepOp::Block`],
/// rejected kinds stop at their rule.
fn unplanned(op: &Op) -> ! {
    unreachable!("`{}` is never a declared step of a plan", op.keyword())
}

fn chain_forward(steps: &[Step], input: Option<&Profile>) -> Option<Profile> {
    let mut current = input.cloned();
    for step in steps {
        current = forward(step, current.as_ref());
    }
    current
}

fn pool_or_weight_window(op: &Op) -> Window {
    match *op {
        Op::AvgPool2d { kernel, stride } => Window { kernel, stride, padding: 0 },
        ref op => window(op),
    }
}

/// Computes every weight layer's factors in the chain `steps` at parameter path `prefix`, whose
/// input has profile `input` and whose output gradient has profile `output_gradient`, calling
/// `visit(path, factors)` on each; returns the input gradient's profile.
pub(crate) fn chain_factors(
    prefix: &str,
    steps: &[Step],
    input: Option<&Profile>,
    output_gradient: Option<Profile>,
    visit: &mut dyn FnMut(String, BorderFactors),
) -> Option<Profile> {
    let mut inputs = Vec::with_capacity(steps.len());
    let mut current = input.cloned();
    for step in steps {
        inputs.push(current.clone());
        current = forward(step, current.as_ref());
    }
    let mut gradient = output_gradient;
    for (step, input) in steps.iter().zip(inputs).rev() {
        let path = child_path(prefix, &step.name);
        let uniform_in = Profile::uniform(step.input_shape);
        gradient = match &step.op {
            StepOp::Block { alpha, beta, main, shortcut, .. } => {
                // The branches' backward gains, from the forward pass that set each step's.
                let gain = |chain: &[Step]| chain.iter().map(|s| s.backward_gain).product::<f64>();
                let (main_weight, shortcut_weight) = (beta * beta * gain(main), alpha * alpha * gain(shortcut));
                let main_in = chain_factors(&format!("{path}.main"), main, input.as_ref(), gradient.clone(), visit);
                let shortcut_in =
                    chain_factors(&format!("{path}.shortcut"), shortcut, input.as_ref(), gradient.clone(), visit);
                match (main_in, shortcut_in) {
                    (Some(m), Some(s)) => {
                        let share = shortcut_weight / (shortcut_weight + main_weight);
                        Some(Profile::mix(&s, if share.is_finite() { share } else { 0.5 }, &m))
                    }
                    (m, s) => m.or(s).or(uniform_in),
                }
            }
            StepOp::Declared { op, .. } => {
                if let (Some(_), Some(v), Some(u)) = (step.weight(), input.as_ref(), gradient.as_ref()) {
                    visit(path, weight_factors(window(op), v, u));
                }
                match (op.def().borders, gradient.as_ref(), uniform_in) {
                    (BorderRule::Window, Some(u), Some(uniform)) => {
                        let window = pool_or_weight_window(op);
                        Some(Profile {
                            rows: normalized(window_backward(window, &u.rows, uniform.rows.len())),
                            cols: normalized(window_backward(window, &u.cols, uniform.cols.len())),
                        })
                    }
                    // No gradient profile to carry back (it came out of a vector): alike everywhere.
                    (BorderRule::Window, _, uniform) => uniform,
                    (BorderRule::Pointwise, _, uniform) => gradient.or(uniform),
                    // Out of flatten, global pooling, a linear layer's vector: every position alike.
                    (BorderRule::Collapses, _, uniform) => uniform,
                    (BorderRule::Branches | BorderRule::NotPlanned, _, _) => unplanned(op),
                }
            }
            StepOp::FixedScale { .. } => gradient,
        };
    }
    gradient
}

//! Finding NaNs and infinities where they start: in a checkpoint, in a forward pass
//! ([`Network::forward_checked`](crate::Network::forward_checked)) or in a training step
//! ([`backward_step_checked`]), instead of in an all-NaN output many steps later.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarMap};

/// The first non-finite value of `tensor`, with its flat index (`None` for integer tensors).
pub fn first_non_finite(tensor: &Tensor) -> candle_core::Result<Option<(usize, f64)>> {
    if !tensor.dtype().is_float() {
        return Ok(None);
    }
    // The common case costs one reduction; only a tensor that has a bad value is searched.
    let tensor = tensor.to_device(&Device::Cpu)?.flatten_all()?.to_dtype(DType::F64)?;
    let sum = tensor.abs()?.sum_all()?.to_scalar::<f64>()?;
    if sum.is_finite() {
        return Ok(None);
    }
    Ok(tensor.to_vec1::<f64>()?.into_iter().enumerate().find(|(_, v)| !v.is_finite()))
}

/// What held the first NaN or infinity of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    Loss,
    Gradient,
    Parameter,
}

/// A training step that went non-finite, or an error of candle's.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error("step {step}: the loss is {value}; {}", culprit_text(.culprit))]
    NonFiniteLoss { step: usize, value: f64, culprit: Option<(Culprit, String, usize, f64)> },
    #[error("step {step}: {} `{name}` holds {value} at flat index {index}{}", what(*.culprit), advice(*.culprit))]
    NonFinite { step: usize, culprit: Culprit, name: String, index: usize, value: f64 },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn what(culprit: Culprit) -> &'static str {
    match culprit {
        Culprit::Loss => "the loss",
        Culprit::Gradient => "the gradient of",
        Culprit::Parameter => "after the update, parameter",
    }
}

fn advice(culprit: Culprit) -> &'static str {
    match culprit {
        Culprit::Parameter => "; the learning rate is too large for this network",
        _ => "",
    }
}

fn culprit_text(culprit: &Option<(Culprit, String, usize, f64)>) -> String {
    match culprit {
        Some((culprit, name, index, value)) => {
            format!("first non-finite: {} `{name}` ({value} at {index})", what(*culprit))
        }
        None => "every parameter and gradient is finite, so the input or the labels are not".to_string(),
    }
}

/// The variables of `varmap` in name order, so a report names the same one every time.
fn variables(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let mut vars: Vec<(String, candle_core::Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// `optimizer.backward_step(loss)` with anomaly detection: an error that names step `step` and
/// the first non-finite gradient or parameter (the variables of `varmap`, by name) instead of a
/// network whose weights silently became NaN. Returns the loss. Costs one reduction per
/// gradient and parameter.
pub fn backward_step_checked<O: Optimizer>(
    optimizer: &mut O,
    varmap: &VarMap,
    loss: &Tensor,
    step: usize,
) -> Result<f64, TrainingError> {
    let value = loss.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    let grads = loss.backward()?;
    let vars = variables(varmap);
    // Every parameter is finite before the step (a network handed in broken is named as such).
    check_parameters(&vars, step)?;
    let mut first_gradient = None;
    for (name, var) in &vars {
        if first_gradient.is_none() {
            if let Some(grad) = grads.get(var.as_tensor()) {
                if let Some((index, bad)) = first_non_finite(grad)? {
                    first_gradient = Some((name.clone(), index, bad));
                }
            }
        }
    }
    if !value.is_finite() {
        let culprit = first_gradient.map(|(name, index, bad)| (Culprit::Gradient, name, index, bad));
        return Err(TrainingError::NonFiniteLoss { step, value, culprit });
    }
    if let Some((name, index, bad)) = first_gradient {
        return Err(TrainingError::NonFinite { step, culprit: Culprit::Gradient, name, index, value: bad });
    }
    optimizer.step(&grads)?;
    check_parameters(&vars, step)?;
    Ok(value)
}

/// The first parameter (in name order) holding a NaN or an infinity, as an error of `step`.
fn check_parameters(vars: &[(String, candle_core::Var)], step: usize) -> Result<(), TrainingError> {
    for (name, var) in vars {
        if let Some((index, value)) = first_non_finite(var.as_tensor())? {
            let name = name.clone();
            return Err(TrainingError::NonFinite { step, culprit: Culprit::Parameter, name, index, value });
        }
    }
    Ok(())
}

//! Finding NaNs and infinities where they start: in a checkpoint, in a forward pass
//! ([`Network::forward_checked`](crate::Network::forward_checked)) or in a training step
//! ([`TrainingWatch`], [`backward_step_checked`]), instead of in an all-NaN output many steps
//! later. Positions are written as coordinates of the tensor (`[3, 17]`), not flat indices.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use std::fmt;

/// The first NaN or infinity of a tensor: its coordinates and its value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NonFiniteValue {
    /// Coordinates in the tensor's shape, outermost first (`[sample, feature]` for a batch).
    pub position: Vec<usize>,
    /// The value found there: NaN, or an infinity.
    pub value: f64,
}

impl fmt::Display for NonFiniteValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.value, Coordinates(&self.position))
    }
}

/// Coordinates as `[3, 17]` (`[]` for a scalar).
struct Coordinates<'a>(&'a [usize]);

impl fmt::Display for Coordinates<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

/// The coordinates of element `flat` of a row-major tensor of shape `dims`.
fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut position = vec![0; dims.len()];
    for (coordinate, &size) in position.iter_mut().zip(dims).rev() {
        *coordinate = flat % size.max(1);
        flat /= size.max(1);
    }
    position
}

/// The first non-finite value of `tensor` in row-major order (`None` for integer tensors).
pub fn first_non_finite(tensor: &Tensor) -> candle_core::Result<Option<NonFiniteValue>> {
    if !tensor.dtype().is_float() {
        return Ok(None);
    }
    // The common case costs one reduction; only a tensor that has a bad value is searched.
    let flat = tensor.to_device(&Device::Cpu)?.flatten_all()?.to_dtype(DType::F64)?;
    let sum = flat.abs()?.sum_all()?.to_scalar::<f64>()?;
    if sum.is_finite() {
        return Ok(None);
    }
    let found = flat.to_vec1::<f64>()?.into_iter().enumerate().find(|(_, v)| !v.is_finite());
    Ok(found.map(|(index, value)| NonFiniteValue { position: unravel(index, tensor.dims()), value }))
}

/// What held the first NaN or infinity of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    /// The loss itself.
    Loss,
    /// The gradient of a parameter.
    Gradient,
    /// A parameter, after the optimizer's update.
    Parameter,
}

/// A training step that went non-finite or diverged, or an error of candle's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainingError {
    /// The loss is NaN or infinite; `culprit` is the first non-finite gradient, if any.
    #[error("step {step}: the loss is {value}{}; {}", ranks_text(.ranks), culprit_text(.culprit))]
    NonFiniteLoss {
        /// The step, counted from 0.
        step: usize,
        /// The loss (in data-parallel training, the mean over the ranks).
        value: f64,
        /// In data-parallel training, the ranks whose own loss is not finite (empty otherwise).
        ranks: Vec<usize>,
        /// The first non-finite gradient (by parameter name), if any.
        culprit: Option<(Culprit, String, NonFiniteValue)>,
    },
    /// A gradient, or a parameter after the update, holds a NaN or an infinity.
    #[error("step {step}: {} `{name}` holds {found}{}", what(*.culprit), advice(*.culprit))]
    NonFinite {
        /// The step, counted from 0.
        step: usize,
        /// What held it.
        culprit: Culprit,
        /// The parameter's name in the `VarMap`.
        name: String,
        /// Where, and what.
        found: NonFiniteValue,
    },
    /// The loss jumped far above its value at the first step: the run is diverging, though every
    /// value may still be finite. Caught here, the parameters are those before the jump.
    #[error(
        "step {step}: the loss jumped to {loss:.4e}, {:.3e} times its {start:.4} at step {start_step}; \
         the learning rate is too large for this network: lower it (a factor of 2-10), or raise \
         `TrainingWatch::jump_factor` if such a jump is expected",
        .loss / .start
    )]
    Diverged {
        /// The step whose loss jumped.
        step: usize,
        /// Its loss.
        loss: f64,
        /// The first finite loss the watch saw.
        start: f64,
        /// The step of `start`.
        start_step: usize,
    },
    /// An error of candle's.
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

fn ranks_text(ranks: &[usize]) -> String {
    match ranks {
        [] => String::new(),
        [rank] => format!(" (on rank {rank})"),
        ranks => format!(" (on ranks {ranks:?})"),
    }
}

fn culprit_text(culprit: &Option<(Culprit, String, NonFiniteValue)>) -> String {
    match culprit {
        Some((culprit, name, found)) => format!("first non-finite: {} `{name}` ({found})", what(*culprit)),
        None => "every parameter and gradient is finite, so the input or the labels are not".to_string(),
    }
}

/// Anomaly detection over a whole run: each [`backward_step`](Self::backward_step) is
/// [`backward_step_checked`] (NaNs and infinities named where they start) and also stops, before
/// the update, at the first step whose loss exceeds `jump_factor` times the first loss it saw.
/// A diverging run is then named at the step where it left, not several steps later at the first
/// NaN. The default factor, 100, is far above what a healthy run does (a network planned by the
/// calculus starts near its smallest output, so its loss starts near the loss of chance). A loss
/// that starts near zero by design (a regression already close to its target) wants a larger
/// factor, or `f64::INFINITY` to check only for NaNs and infinities.
///
/// ```
/// use scalenet::finite::TrainingWatch;
/// # use scalenet::candle_core::{Device, Tensor, Var};
/// # use scalenet::candle_nn::{Optimizer, VarMap, SGD};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let varmap = VarMap::new();
/// let w = varmap.get(1, "w", scalenet::candle_nn::Init::Const(1.0), scalenet::candle_core::DType::F64, &Device::Cpu)?;
/// let mut sgd = SGD::new(varmap.all_vars(), 1.5)?; // too large for the loss w⁴: diverges
/// let mut watch = TrainingWatch::new();
/// let error = loop {
///     let loss = w.powf(4.0)?.sum_all()?;
///     if let Err(error) = watch.backward_step(&mut sgd, &varmap, &loss) {
///         break error;
///     }
/// };
/// assert!(error.to_string().contains("the loss jumped"), "{error}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TrainingWatch {
    step: usize,
    start: Option<(usize, f64)>,
    jump_factor: f64,
}

impl Default for TrainingWatch {
    fn default() -> Self {
        TrainingWatch { step: 0, start: None, jump_factor: 100.0 }
    }
}

impl TrainingWatch {
    /// A watch at step 0 with the default jump factor, 100.
    pub fn new() -> Self {
        Self::default()
    }

    /// The factor over the first loss that counts as divergence (`f64::INFINITY`: only NaNs and
    /// infinities stop the run).
    pub fn jump_factor(self, factor: f64) -> Self {
        TrainingWatch { jump_factor: factor, ..self }
    }

    /// The number of steps taken so far, which is also the next step's number.
    pub fn step(&self) -> usize {
        self.step
    }

    /// `optimizer.backward_step(loss)`, checked as the type's documentation says; returns the
    /// loss. A step that fails applies no update (a non-finite parameter is found after it).
    pub fn backward_step<O: Optimizer>(
        &mut self,
        optimizer: &mut O,
        varmap: &VarMap,
        loss: &Tensor,
    ) -> Result<f64, TrainingError> {
        self.watched_step(optimizer, varmap, loss, None)
    }

    /// A checked step whose gradients `reduce` may replace first (data-parallel training:
    /// `crate::distributed` averages them over the ranks).
    pub(crate) fn watched_step<O: Optimizer>(
        &mut self,
        optimizer: &mut O,
        varmap: &VarMap,
        loss: &Tensor,
        reduce: Option<Reduce<'_>>,
    ) -> Result<f64, TrainingError> {
        let step = self.step;
        let (value, ranks, grads) = reduced_backward(loss, reduce)?;
        if value.is_finite() {
            match self.start {
                None => self.start = Some((step, value)),
                Some((start_step, start)) if value.abs() > self.jump_factor * start.abs().max(f64::MIN_POSITIVE) => {
                    return Err(TrainingError::Diverged { step, loss: value, start, start_step });
                }
                Some(_) => {}
            }
        }
        checked_step(optimizer, varmap, grads, value, ranks, step)?;
        self.step += 1;
        Ok(value)
    }
}

/// What a data-parallel step does to the gradients of this rank's loss (given with its value):
/// replaces them by their mean over the ranks, and returns the mean loss with the ranks whose own
/// loss is not finite.
pub(crate) type Reduce<'a> = &'a dyn Fn(&mut GradStore, f64) -> candle_core::Result<(f64, Vec<usize>)>;

/// The loss's value and gradients, reduced by `reduce` if given.
fn reduced_backward(loss: &Tensor, reduce: Option<Reduce<'_>>) -> Result<(f64, Vec<usize>, GradStore), TrainingError> {
    let value = scalar(loss)?;
    let mut grads = loss.backward()?;
    match reduce {
        None => Ok((value, Vec::new(), grads)),
        Some(reduce) => {
            let (mean, ranks) = reduce(&mut grads, value)?;
            Ok((mean, ranks, grads))
        }
    }
}

fn scalar(loss: &Tensor) -> candle_core::Result<f64> {
    loss.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()
}

/// The variables of `varmap` in name order, so a report names the same one every time.
pub(crate) fn variables(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
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
    let (value, ranks, grads) = reduced_backward(loss, None)?;
    checked_step(optimizer, varmap, grads, value, ranks, step)?;
    Ok(value)
}

/// The step of [`backward_step_checked`] for a loss whose value and gradients are computed.
fn checked_step<O: Optimizer>(
    optimizer: &mut O,
    varmap: &VarMap,
    grads: GradStore,
    value: f64,
    ranks: Vec<usize>,
    step: usize,
) -> Result<(), TrainingError> {
    let vars = variables(varmap);
    // Every parameter is finite before the step (a network handed in broken is named as such).
    check_parameters(&vars, step)?;
    let mut first_gradient = None;
    for (name, var) in &vars {
        if first_gradient.is_none() {
            if let Some(grad) = grads.get(var.as_tensor()) {
                if let Some(found) = first_non_finite(grad)? {
                    first_gradient = Some((name.clone(), found));
                }
            }
        }
    }
    if !value.is_finite() {
        let culprit = first_gradient.map(|(name, found)| (Culprit::Gradient, name, found));
        return Err(TrainingError::NonFiniteLoss { step, value, ranks, culprit });
    }
    if let Some((name, found)) = first_gradient {
        return Err(TrainingError::NonFinite { step, culprit: Culprit::Gradient, name, found });
    }
    optimizer.step(&grads)?;
    check_parameters(&vars, step)
}

/// The first parameter (in name order) holding a NaN or an infinity, as an error of `step`.
fn check_parameters(vars: &[(String, candle_core::Var)], step: usize) -> Result<(), TrainingError> {
    for (name, var) in vars {
        if let Some(found) = first_non_finite(var.as_tensor())? {
            let name = name.clone();
            return Err(TrainingError::NonFinite { step, culprit: Culprit::Parameter, name, found });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_coordinates_in_the_shape() -> candle_core::Result<()> {
        let mut values = vec![0f32; 4 * 5 * 6];
        values[2 * 30 + 3 * 6 + 4] = f32::NEG_INFINITY;
        let found = first_non_finite(&Tensor::from_vec(values, (4, 5, 6), &Device::Cpu)?)?.unwrap();
        assert_eq!(found.position, [2, 3, 4]);
        assert_eq!(found.to_string(), "-inf at [2, 3, 4]");
        let scalar = Tensor::new(f64::NAN, &Device::Cpu)?;
        assert_eq!(first_non_finite(&scalar)?.unwrap().to_string(), "NaN at []");
        assert_eq!(first_non_finite(&Tensor::ones((2, 3), DType::F32, &Device::Cpu)?)?, None);
        Ok(())
    }
}

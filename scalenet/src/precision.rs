//! Mixed-precision training: a network computing in bf16 or f16 with f32 master weights, its loss
//! scaled by the factor the calculus chooses before training, with the usual dynamic fallback.
//!
//! A generated network is built in the compute type (`Net::new_seeded(&varmap, dtype(format), ..)`),
//! so its forward and backward passes run in half precision; on the CPU scalenet's convolutions
//! and matrix products widen their operands to f32 and accumulate there, rounding each result
//! once (as a GPU kernel with an f32 accumulator does). [`MixedPrecision`] keeps an f32 copy of
//! every parameter (the masters, in a [`VarMap`] of their own that checkpoints save), runs the
//! optimizer on them, and writes the half weights back after each update.
//!
//! The loss is multiplied by [`LossScaler::scale`] before the backward pass, so that the small
//! backward signals of a mean-reduced loss land inside f16's normal range; the gradients are
//! divided by it again in f32. Its first value comes from the plan
//! ([`ScalePlan`](crate::calculus::precision::ScalePlan): the power of two that centres every
//! predicted backward signal and weight gradient in f16's window), not from a guess such as
//! PyTorch's `GradScaler`'s 2^16. The fallback is `GradScaler`'s: a step whose gradients are not
//! finite is skipped and the scale halved; after `growth_interval` finite steps in a row it
//! doubles. In bf16 and f32 the calculus's scale is 1 and nothing overflows that f32 would not.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use scalenet::calculus::precision::OutputGradient;
//! use scalenet::precision::{dtype, LossScaler, MixedPrecision};
//! use scalenet::calculus::Format;
//! use scalenet::optim::{ParamsSgd, Sgd};
//! use scalenet::{network, Network};
//!
//! network! { pub struct Mlp { input: [16], fc1: linear(32), relu, fc2: linear(4) } }
//!
//! let varmap = VarMap::new();
//! let net = Mlp::new_seeded(&varmap, dtype(Format::F16), &Device::Cpu, 0)?;
//! let scaler = LossScaler::for_plan(Mlp::plan(), Format::F16, OutputGradient::cross_entropy(4, 8));
//! assert!(scaler.scale() > 1.0);
//! let mut training = MixedPrecision::<Sgd>::new(&varmap, scaler, ParamsSgd::new(0.1))?;
//! let xs = Tensor::randn(0f32, 1., (8, 16), &Device::Cpu)?.to_dtype(DType::F16)?;
//! let labels = Tensor::new(&[0u32, 1, 2, 3, 0, 1, 2, 3], &Device::Cpu)?;
//! // The loss in f32, from the half-precision logits.
//! let logits = candle_nn::Module::forward(&net, &xs)?.to_dtype(DType::F32)?;
//! let outcome = training.backward_step(&candle_nn::loss::cross_entropy(&logits, &labels)?)?;
//! assert!(outcome.applied());
//! // The masters are f32, the network's weights their f16 rounding.
//! assert_eq!(training.masters().get((32, 16), "fc1.weight", candle_nn::Init::Const(0.), DType::F32, &Device::Cpu)?.dtype(), DType::F32);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::calculus::precision::{OutputGradient, ScalePlan};
use crate::calculus::{Format, Plan};
use crate::finite::{first_non_finite, variables, Culprit, TrainingError};
use candle_core::{DType, Tensor, Var};
use candle_nn::{Optimizer, VarMap};

/// The candle dtype a network computes in for `format`.
pub fn dtype(format: Format) -> DType {
    match format {
        Format::F32 => DType::F32,
        Format::Bf16 => DType::BF16,
        Format::F16 => DType::F16,
    }
}

/// The loss scale and its dynamic fallback (`torch.amp.GradScaler`'s rule from a chosen start).
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    scale: f64,
    growth_interval: usize,
    finite_in_a_row: usize,
    steps: usize,
    skipped: usize,
}

/// Below this scale a step that still overflows is an error: the gradients are not finite at
/// any useful scale (the forward pass or the data is at fault, not the scale).
const SMALLEST_SCALE: f64 = 1.0 / (1u64 << 24) as f64;

impl LossScaler {
    /// A scaler starting at `scale` (a power of two keeps the scaling exact), doubling after 2000
    /// finite steps in a row as `GradScaler` does.
    pub fn new(scale: f64) -> Self {
        LossScaler { scale, growth_interval: 2000, finite_in_a_row: 0, steps: 0, skipped: 0 }
    }

    /// A scaler starting at the scale the calculus chooses for `plan` in `format` with the loss's
    /// gradient `gradient` ([`ScalePlan`]).
    pub fn for_plan(plan: &Plan, format: Format, gradient: OutputGradient) -> Self {
        LossScaler::new(ScalePlan::new(plan, format, gradient).loss_scale)
    }

    /// The finite steps in a row after which the scale doubles.
    pub fn growth_interval(self, steps: usize) -> Self {
        LossScaler { growth_interval: steps.max(1), ..self }
    }

    /// The factor the next loss is multiplied by.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Steps seen, applied or skipped.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Steps skipped because a gradient was not finite at the scale of the time.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Records a step: finite gradients count towards growth, others halve the scale.
    pub fn update(&mut self, finite: bool) {
        self.steps += 1;
        if finite {
            self.finite_in_a_row += 1;
            if self.finite_in_a_row >= self.growth_interval {
                self.scale *= 2.0;
                self.finite_in_a_row = 0;
            }
        } else {
            self.skipped += 1;
            self.scale /= 2.0;
            self.finite_in_a_row = 0;
        }
    }
}

/// What a mixed-precision step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepOutcome {
    /// The update was applied.
    Applied {
        /// The loss before the update.
        loss: f64,
    },
    /// A gradient was not finite at `scale`: no update, the scale halved.
    Skipped {
        /// The loss of the skipped step.
        loss: f64,
        /// The scale it overflowed at.
        scale: f64,
    },
}

impl StepOutcome {
    /// Whether the update was applied.
    pub fn applied(&self) -> bool {
        matches!(self, StepOutcome::Applied { .. })
    }

    /// The step's loss.
    pub fn loss(&self) -> f64 {
        match *self {
            StepOutcome::Applied { loss } | StepOutcome::Skipped { loss, .. } => loss,
        }
    }
}

/// A parameter of the network and its f32 master.
struct Pair {
    name: String,
    model: Var,
    master: Var,
}

/// Training with f32 master weights and a scaled loss (see the module documentation).
pub struct MixedPrecision<O: Optimizer> {
    pairs: Vec<Pair>,
    masters: VarMap,
    optimizer: O,
    scaler: LossScaler,
}

impl<O: Optimizer> MixedPrecision<O> {
    /// Masters for every floating variable of `varmap` (an f32 variable is its own master), and
    /// `O` over them with `config`.
    pub fn new(varmap: &VarMap, scaler: LossScaler, config: O::Config) -> candle_core::Result<Self> {
        let masters = VarMap::new();
        let mut pairs = Vec::new();
        for (name, model) in variables(varmap) {
            if !model.dtype().is_float() {
                continue;
            }
            let master = match model.dtype() {
                DType::F32 => model.clone(),
                _ => Var::from_tensor(&model.as_tensor().to_dtype(DType::F32)?)?,
            };
            masters.data().lock().expect("varmap lock poisoned").insert(name.clone(), master.clone());
            pairs.push(Pair { name, model, master });
        }
        let optimizer = O::new(pairs.iter().map(|pair| pair.master.clone()).collect(), config)?;
        Ok(MixedPrecision { pairs, masters, optimizer, scaler })
    }

    /// The f32 masters by the network's variable names: what a checkpoint saves
    /// ([`save_atomically`](crate::checkpoint::save_atomically)) and loads (then call
    /// [`Self::copy_masters_to_model`]).
    pub fn masters(&self) -> &VarMap {
        &self.masters
    }

    /// Writes every master, rounded to the network's type, into the network's weights (after
    /// loading masters from a checkpoint).
    pub fn copy_masters_to_model(&self) -> candle_core::Result<()> {
        for pair in self.pairs.iter().filter(|pair| pair.model.dtype() != DType::F32) {
            pair.model.set(&pair.master.as_tensor().to_dtype(pair.model.dtype())?)?;
        }
        Ok(())
    }

    /// The loss scale and its counts.
    pub fn scaler(&self) -> &LossScaler {
        &self.scaler
    }

    /// The optimizer, which updates the masters.
    pub fn optimizer(&self) -> &O {
        &self.optimizer
    }

    /// Backward pass of `loss × scale`, gradients unscaled in f32, then the update of the masters
    /// and the network's weights, or a skipped step and a halved scale when a gradient is not
    /// finite. A non-finite loss is an error (no scale reaches the forward pass), as is a step
    /// that overflows at a scale below 2^-24.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<StepOutcome, TrainingError> {
        self.reduced_step(loss, None)
    }

    /// [`Self::backward_step`] whose unscaled f32 gradients (keyed by the masters) `reduce` may
    /// replace before the checks and the update, returning the loss to report and the ranks whose
    /// own loss is not finite (data-parallel training: `crate::distributed` averages them over
    /// the ranks, so every rank skips, errs or applies together).
    pub(crate) fn reduced_step(
        &mut self,
        loss: &Tensor,
        reduce: Option<crate::finite::Reduce<'_>>,
    ) -> Result<StepOutcome, TrainingError> {
        let step = self.scaler.steps();
        let value = loss.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        if !value.is_finite() && reduce.is_none() {
            return Err(TrainingError::NonFiniteLoss { step, value, ranks: Vec::new(), culprit: None });
        }
        let scale = self.scaler.scale();
        let scaled = if scale == 1.0 { loss.clone() } else { loss.affine(scale, 0.0)? };
        let mut grads = scaled.backward()?;
        for pair in &self.pairs {
            let Some(grad) = grads.remove(pair.model.as_tensor()) else { continue };
            let grad = grad.to_dtype(DType::F32)?;
            let grad = if scale == 1.0 { grad } else { grad.affine(1.0 / scale, 0.0)? };
            grads.insert(pair.master.as_tensor(), grad);
        }
        let (value, ranks) = match reduce {
            Some(reduce) => reduce(&mut grads, value)?,
            None => (value, Vec::new()),
        };
        if !value.is_finite() {
            return Err(TrainingError::NonFiniteLoss { step, value, ranks, culprit: None });
        }
        let unscaled: Vec<(&Pair, Tensor)> = self
            .pairs
            .iter()
            .filter_map(|pair| grads.get(pair.master.as_tensor()).map(|grad| (pair, grad.clone())))
            .collect();
        // One reduction per gradient and one transfer: a NaN or an infinity anywhere makes the sum
        // of its tensor's absolute values non-finite.
        let sums: Vec<Tensor> =
            unscaled.iter().map(|(_, grad)| grad.abs()?.sum_all()?.reshape(1)).collect::<candle_core::Result<_>>()?;
        let finite = sums.is_empty() || Tensor::cat(&sums, 0)?.to_vec1::<f32>()?.iter().all(|s| s.is_finite());
        self.scaler.update(finite);
        if !finite {
            if self.scaler.scale() < SMALLEST_SCALE {
                let (pair, found) = first_non_finite_gradient(&unscaled)?;
                return Err(TrainingError::NonFinite {
                    step,
                    culprit: Culprit::Gradient,
                    name: pair.name.clone(),
                    found,
                });
            }
            return Ok(StepOutcome::Skipped { loss: value, scale });
        }
        self.optimizer.step(&grads)?;
        self.copy_masters_to_model()?;
        Ok(StepOutcome::Applied { loss: value })
    }
}

fn first_non_finite_gradient<'a>(
    unscaled: &[(&'a Pair, Tensor)],
) -> candle_core::Result<(&'a Pair, crate::finite::NonFiniteValue)> {
    for (pair, grad) in unscaled {
        if let Some(found) = first_non_finite(grad)? {
            return Ok((pair, found));
        }
    }
    candle_core::bail!("a gradient was not finite, and then every gradient was")
}

/// What one top-level step of a network measured in its own type on one batch, with the loss
/// scaled: the standard deviations a [`ScalePlan`] predicts, and how much of the weight gradient
/// was lost to zero.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredStep {
    /// The step's output.
    pub output: f64,
    /// The (scaled) gradient reaching the step's output.
    pub gradient: f64,
    /// The (scaled) gradient of the step's weight, for a weight step.
    pub weight_gradient: Option<f64>,
    /// The fraction of the weight gradient's entries that are exactly zero.
    pub weight_gradient_zeros: Option<f64>,
}

/// Measures every top-level step of `net` (built in the type it computes in, its variables in
/// `varmap`) on `input` with the softmax cross-entropy of `labels` averaged over the batch and
/// multiplied by `scale`, the way [`MixedPrecision`] trains it: the output of every step, the
/// gradient reaching it (zero "probe" variables of the step's type added after every step read
/// it, as [`crate::diagnostics::measure`] does) and the weight gradients, each as the root mean
/// square of the values in the network's type. Dropout is off.
pub fn measure_signals<N: crate::Network>(
    net: &N,
    varmap: &VarMap,
    input: &Tensor,
    labels: &Tensor,
    scale: f64,
) -> candle_core::Result<Vec<MeasuredStep>> {
    let plan = N::plan();
    let (mut outputs, mut probes) = (Vec::new(), Vec::new());
    let mut hook = |_: usize, xs: Tensor| -> candle_core::Result<Tensor> {
        let probe = Var::zeros(xs.shape(), xs.dtype(), xs.device())?;
        let probed = (&xs + probe.as_tensor())?;
        outputs.push(xs);
        probes.push(probe);
        Ok(probed)
    };
    let logits = net.forward_hooked(input, false, Some(&mut hook))?.to_dtype(DType::F32)?;
    let grads = candle_nn::loss::cross_entropy(&logits, labels)?.affine(scale, 0.0)?.backward()?;
    let rms = |t: &Tensor| -> candle_core::Result<f64> {
        t.to_dtype(DType::F64)?.sqr()?.mean_all()?.to_scalar::<f64>().map(f64::sqrt)
    };
    let zeros =
        |g: &Tensor| -> candle_core::Result<f64> { g.eq(0.0)?.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>() };
    let vars: std::collections::BTreeMap<String, Var> = variables(varmap).into_iter().collect();
    let mut measured = Vec::with_capacity(plan.steps.len());
    for (index, step) in plan.steps.iter().enumerate() {
        let gradient = match grads.get(probes[index].as_tensor()) {
            Some(gradient) => rms(gradient)?,
            None => 0.0,
        };
        let weight = step.weight().and_then(|_| vars.get(&format!("{}.weight", step.name)));
        let weight_gradient = weight.and_then(|var| grads.get(var.as_tensor()));
        measured.push(MeasuredStep {
            output: rms(&outputs[index])?,
            gradient,
            weight_gradient: weight_gradient.map(rms).transpose()?,
            weight_gradient_zeros: weight_gradient.map(zeros).transpose()?,
        });
    }
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaler_halves_on_overflow_and_doubles_after_its_interval() {
        let mut scaler = LossScaler::new(1024.0).growth_interval(3);
        scaler.update(false);
        assert_eq!((scaler.scale(), scaler.skipped()), (512.0, 1));
        scaler.update(true);
        scaler.update(true);
        assert_eq!(scaler.scale(), 512.0);
        scaler.update(true);
        assert_eq!(scaler.scale(), 1024.0);
        // An overflow restarts the count.
        scaler.update(true);
        scaler.update(false);
        scaler.update(true);
        scaler.update(true);
        assert_eq!((scaler.scale(), scaler.steps(), scaler.skipped()), (512.0, 8, 2));
    }
}

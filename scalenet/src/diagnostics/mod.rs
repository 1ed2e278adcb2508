//! Measuring what the calculus predicts on a real network at initialization.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;

mod coordinate;
mod gauss_newton;
pub mod jacobian;
pub mod per_sample;

pub use coordinate::CoordinateCheck;
pub use gauss_newton::{gauss_newton, GaussNewton};

/// Element-wise mean of `t^2`, in f64.
pub fn second_moment(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.sqr()?.mean_all()?.to_scalar::<f64>()
}

/// A tensor like `like` of i.i.d. standard normal values drawn from `seed`.
pub fn seeded_normal(like: &Tensor, seed: u64) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..like.elem_count()).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(values, like.shape(), like.device())?.to_dtype(like.dtype())
}

/// `E[W^2]` of `weight` after each row (first dimension) loses its mean over the rest: the weight a
/// layer with centred rows (`centred_weights`) multiplies by.
pub fn row_centred_second_moment(weight: &Tensor) -> Result<f64> {
    let rows = weight.to_dtype(DType::F64)?.flatten_from(1)?;
    second_moment(&rows.broadcast_sub(&rows.mean_keepdim(1)?)?)
}

/// `E[W^2]` of every variable in `varmap` whose name ends in `.weight`.
pub fn weight_second_moments(varmap: &VarMap) -> Result<BTreeMap<String, f64>> {
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    vars.iter()
        .filter(|(name, _)| name.ends_with(".weight"))
        .map(|(name, var)| Ok((name.clone(), second_moment(var.as_tensor())?)))
        .collect()
}

/// The weight-to-gradient ratio `E[dW^2]/E[W^2]` of every `.weight` variable (Theorem 1: it equals
/// gamma), with batch-size-1 semantics, estimated from one batch gradient.
///
/// The loss is `sum(y * N)` for i.i.d. standard normal `N` drawn from `seed`: each sample's
/// backward signal is independent of the others' and uncorrelated with the output, so the
/// per-sample weight gradients are uncorrelated and `E[dW_batch^2] = B E[dW_sample^2]`. (The
/// gradient of one shared quadratic loss would add the samples coherently in the last layer.)
/// This reaches every weight, inside residual blocks too, but the estimate is noisy for
/// convolutions (see [`per_sample`]); [`measure`] forms each sample's gradient instead.
pub fn weight_to_gradient_ratios(varmap: &VarMap, output: &Tensor, seed: u64) -> Result<BTreeMap<String, f64>> {
    let signal = seeded_normal(output, seed)?;
    let grads = (output * signal)?.sum_all()?.backward()?;
    ratios_from_gradients(varmap, &grads, output.dim(0)?)
}

/// `E[dW^2] / batch / E[W^2]` of every `.weight` variable with a gradient in `grads`: per-sample
/// gradients of the `sum(y * N)` loss are uncorrelated, so the batch gradient's second moment is
/// `batch` times one sample's.
fn ratios_from_gradients(
    varmap: &VarMap,
    grads: &candle_core::backprop::GradStore,
    batch: usize,
) -> Result<BTreeMap<String, f64>> {
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    let mut ratios = BTreeMap::new();
    for (name, var) in vars.iter().filter(|(name, _)| name.ends_with(".weight")) {
        if let Some(gradient) = grads.get(var.as_tensor()) {
            ratios.insert(name.clone(), second_moment(gradient)? / batch as f64 / second_moment(var.as_tensor())?);
        }
    }
    Ok(ratios)
}

/// A measured quantity beside the calculus's prediction.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Compared {
    /// The value measured.
    pub measured: f64,
    /// The calculus's prediction.
    pub predicted: f64,
    /// Standard error of `measured` between initializations (jackknife), where several are pooled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standard_error: Option<f64>,
}

impl Compared {
    /// A single measurement (no standard error).
    pub fn new(measured: f64, predicted: f64) -> Self {
        Compared { measured, predicted, standard_error: None }
    }

    /// `measured / predicted`: 1 when the calculus is right.
    pub fn ratio(&self) -> f64 {
        self.measured / self.predicted
    }

    /// Standard error of [`Compared::ratio`].
    pub fn ratio_standard_error(&self) -> Option<f64> {
        self.standard_error.map(|e| e / self.predicted.abs())
    }
}

/// The second moments measured at one step, per sample and per entry: what every comparison with
/// the calculus is computed from. Pooling initializations averages these, so ratios such as
/// `E[db^2]/E[y^2]` are ratios of pooled moments, not means of noisy per-initialization ratios.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StepMoments {
    /// `E[x^2]` of the step's input.
    pub input: f64,
    /// `E[y^2]` of the step's output.
    pub output: f64,
    /// `E[dy^2]` of the gradient at the step's output.
    pub output_gradient: f64,
    /// `E[W^2]`, for convolutions and linear layers.
    pub weight: Option<f64>,
    /// `E[dW^2]`, one sample's gradient at a time.
    pub weight_gradient: Option<f64>,
    /// What `E[dW^2]` would be if the gradient at the output were uncorrelated with the input, as
    /// assumption 2 has it: `rho_out^2 coverage E[x^2] E[dy^2]` from the same batch.
    pub uncorrelated_weight_gradient: Option<f64>,
    /// `E[db^2]`, one sample's gradient at a time, where the step adds a bias.
    pub bias_gradient: Option<f64>,
}

impl StepMoments {
    fn mean(all: &[StepMoments]) -> StepMoments {
        let n = all.len() as f64;
        let mean = |pick: &dyn Fn(&StepMoments) -> f64| all.iter().map(pick).sum::<f64>() / n;
        let mean_of = |pick: &dyn Fn(&StepMoments) -> Option<f64>| -> Option<f64> {
            all.iter().map(pick).sum::<Option<f64>>().map(|s| s / n)
        };
        StepMoments {
            input: mean(&|m| m.input),
            output: mean(&|m| m.output),
            output_gradient: mean(&|m| m.output_gradient),
            weight: mean_of(&|m| m.weight),
            weight_gradient: mean_of(&|m| m.weight_gradient),
            uncorrelated_weight_gradient: mean_of(&|m| m.uncorrelated_weight_gradient),
            bias_gradient: mean_of(&|m| m.bias_gradient),
        }
    }
}

/// One top-level step of a network, measured at initialization.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepDiagnosis {
    /// The top-level step, as in `plan().steps`.
    pub step: usize,
    /// Parameter path (empty for steps without parameters).
    pub layer: String,
    /// The step's op, as in the report.
    pub op: String,
    /// What the rows below are computed from.
    pub moments: StepMoments,
    /// `E[y^2]` of the step's output.
    pub forward: Compared,
    /// `E[dy^2]` of the step's output, per sample.
    pub backward: Compared,
    /// The activation scaling factor at the output, eq. (1).
    pub scaling: Compared,
    /// `E[dW^2]/E[W^2]` (Theorem 1), for convolutions and linear layers.
    pub gamma: Option<Compared>,
    /// `E[dW^2]` over `rho_out^2 coverage E[x^2] E[dy^2]`: 1 when the layer's input and the gradient at
    /// its output are uncorrelated (assumption 2, on which Theorem 1 rests); a layer's own check,
    /// free of the moments' variation between initializations.
    pub gradient_correlation: Option<f64>,
    /// Eq. (2), second form, from the measured moments around the layer:
    /// `n_in k^2 cov rho_out^2 E[x_in^2]^2 E[dy^2] / E[y^2]`.
    pub extrinsic_gamma: Option<f64>,
    /// Eq. (7): `E[db^2]/E[y^2]`, where the layer adds a bias (`rho_out^2 E[dy^2]/E[y^2]` when the
    /// positions' gradients are uncorrelated, as the calculus assumes).
    pub bias_gamma: Option<Compared>,
    #[serde(skip)]
    predicted: Predicted,
}

/// What the plan predicts at one step, and the constants that turn moments into its quantities.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Predicted {
    forward: f64,
    backward: f64,
    scaling: f64,
    gamma: Option<f64>,
    bias_gamma: Option<f64>,
    /// Entries of the step's output per sample (eq. 1).
    output_numel: f64,
    /// `n_in k^2 coverage rho_out^2` of eq. (2), second form, for weight steps.
    extrinsic_constant: Option<f64>,
    /// `coverage rho_out^2`: the positions and taps that add to each weight's gradient.
    gradient_terms: Option<f64>,
}

impl Predicted {
    fn of(step: &crate::calculus::Step) -> Self {
        Predicted {
            forward: step.forward.second,
            backward: step.backward,
            scaling: step.scaling,
            gamma: step.gamma,
            bias_gamma: step.bias_gamma,
            output_numel: step.output_shape.numel() as f64,
            extrinsic_constant: step.weight().map(|_| extrinsic_gamma(step, 1.0, 1.0, 1.0)),
            gradient_terms: step.weight().map(|w| w.geometry.coverage * step.output_shape.area() as f64),
        }
    }
}

impl StepDiagnosis {
    /// The comparisons of `moments` with `predicted`.
    fn new(step: usize, layer: String, op: String, predicted: Predicted, moments: StepMoments) -> Self {
        let m = moments;
        let p = predicted;
        StepDiagnosis {
            step,
            layer,
            op,
            moments,
            forward: Compared::new(m.output, p.forward),
            backward: Compared::new(m.output_gradient, p.backward),
            scaling: Compared::new(p.output_numel * m.output_gradient * m.output, p.scaling),
            gamma: match (m.weight_gradient, m.weight, p.gamma) {
                (Some(gradient), Some(weight), Some(gamma)) => Some(Compared::new(gradient / weight, gamma)),
                _ => None,
            },
            gradient_correlation: match (m.weight_gradient, m.uncorrelated_weight_gradient) {
                (Some(gradient), Some(uncorrelated)) => Some(gradient / uncorrelated),
                _ => None,
            },
            extrinsic_gamma: p.extrinsic_constant.map(|c| c * m.input * m.input * m.output_gradient / m.output),
            bias_gamma: match (m.bias_gradient, p.bias_gamma) {
                (Some(gradient), Some(gamma)) => Some(Compared::new(gradient / m.output, gamma)),
                _ => None,
            },
            predicted,
        }
    }

    /// This step's comparisons recomputed from other `moments`.
    fn with_moments(&self, moments: StepMoments) -> StepDiagnosis {
        StepDiagnosis::new(self.step, self.layer.clone(), self.op.clone(), self.predicted, moments)
    }

    /// This step with the jackknife standard error of every measured value, from the same step
    /// pooled over all measurements but one, for each one left out.
    fn with_standard_errors(mut self, left_out: &[StepDiagnosis]) -> StepDiagnosis {
        let n = left_out.len() as f64;
        let error = |pick: &dyn Fn(&StepDiagnosis) -> Option<f64>| -> Option<f64> {
            let values: Vec<f64> = left_out.iter().map(pick).collect::<Option<_>>()?;
            let mean = values.iter().sum::<f64>() / n;
            Some(((n - 1.0) / n * values.iter().map(|v| (v - mean).powi(2)).sum::<f64>()).sqrt())
        };
        self.forward.standard_error = error(&|s| Some(s.forward.measured));
        self.backward.standard_error = error(&|s| Some(s.backward.measured));
        self.scaling.standard_error = error(&|s| Some(s.scaling.measured));
        if let Some(gamma) = self.gamma.as_mut() {
            gamma.standard_error = error(&|s| s.gamma.map(|g| g.measured));
        }
        if let Some(bias_gamma) = self.bias_gamma.as_mut() {
            bias_gamma.standard_error = error(&|s| s.bias_gamma.map(|g| g.measured));
        }
        self
    }
}

/// Per-step measurements of a network against its plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnosis {
    /// The network, by name.
    pub network: String,
    /// Initializations pooled.
    pub initializations: usize,
    /// Samples per initialization.
    pub samples: usize,
    /// One per top-level step, in order.
    pub steps: Vec<StepDiagnosis>,
}

/// Measures every top-level step of `net` (whose variables are in `varmap`) on `input`, with
/// batch-size-1 semantics: the loss is `sum(y * N)` for i.i.d. standard normal `N` drawn from
/// `seed`, so each sample's backward signal is independent of the others and of the output, and
/// weight and bias gradients are formed one sample at a time ([`per_sample`]). Zero "probe"
/// variables added after every step give `dL/dx` there (candle's `GradStore` keeps no gradient of
/// intermediate tensors). Forward moments are measured in evaluation mode (dropout off), as the
/// calculus predicts them.
pub fn measure<N: crate::Network>(net: &N, varmap: &VarMap, input: &Tensor, seed: u64) -> Result<Diagnosis> {
    let plan = N::plan();
    let mut outputs = Vec::with_capacity(plan.steps.len());
    let mut probes = Vec::with_capacity(plan.steps.len());
    let mut hook = |_: usize, xs: Tensor| -> Result<Tensor> {
        let probe = candle_core::Var::zeros(xs.shape(), xs.dtype(), xs.device())?;
        let probed = (&xs + probe.as_tensor())?;
        outputs.push(xs);
        probes.push(probe);
        Ok(probed)
    };
    if let Some(found) = crate::finite::first_non_finite(input)? {
        candle_core::bail!("{}: cannot measure on an input that holds {found}", N::NAME)
    }
    let output = net.forward_hooked(input, false, Some(&mut hook))?;
    // A non-finite activation would turn every column after it into NaN without a word.
    for (step, activation) in outputs.iter().enumerate() {
        if let Some(found) = crate::finite::first_non_finite(activation)? {
            candle_core::bail!("{}: step {step} produced {found}; its weights are not finite", N::NAME)
        }
    }
    let signal = seeded_normal(&output, seed)?;
    let grads = (&output * signal)?.sum_all()?.backward()?;
    let weights = weight_second_moments(varmap)?;
    let mut rows = Vec::with_capacity(plan.steps.len());
    for (index, step) in plan.steps.iter().enumerate() {
        let step_input = if index == 0 { input } else { &outputs[index - 1] };
        let output_gradient = match grads.get(probes[index].as_tensor()) {
            Some(gradient) => gradient.clone(),
            None => outputs[index].zeros_like()?,
        };
        let weight_gradient = match step.weight() {
            Some(_) => Some(per_sample::per_sample_weight_gradient_moment(step, step_input, &output_gradient)?),
            None => None,
        };
        let (input_moment, output_gradient_moment) = (second_moment(step_input)?, second_moment(&output_gradient)?);
        let predicted = Predicted::of(step);
        let moments = StepMoments {
            input: input_moment,
            output: second_moment(&outputs[index])?,
            output_gradient: output_gradient_moment,
            uncorrelated_weight_gradient: weight_gradient
                .and(predicted.gradient_terms)
                .map(|terms| terms * input_moment * output_gradient_moment),
            weight: match step.weight() {
                Some(init) if init.centred => {
                    let vars = varmap.data().lock().expect("varmap lock poisoned");
                    vars.get(&format!("{}.weight", step.name))
                        .map(|var| row_centred_second_moment(var.as_tensor()))
                        .transpose()?
                }
                Some(_) => weights.get(&format!("{}.weight", step.name)).copied(),
                None => None,
            },
            weight_gradient,
            bias_gradient: match step.bias_gamma {
                Some(_) => Some(per_sample::bias_gradient_moment(&output_gradient)?),
                None => None,
            },
        };
        rows.push(StepDiagnosis::new(index, step.name.clone(), describe(step), predicted, moments));
    }
    Ok(Diagnosis { network: N::NAME.to_string(), initializations: 1, samples: input.dim(0)?, steps: rows })
}

/// Eq. (2), second form, for a weight step: `n_in k^2 coverage rho_out^2 E[x_in^2]^2 E[dy^2] /
/// E[y^2]`, from the measured second moments of its input `x`, its output `y` and the gradient
/// `dy` at its output. `rho_out^2` is the output's spatial area; `coverage` the fraction of kernel
/// taps that land inside the (zero-padded) input.
pub fn extrinsic_gamma(step: &crate::calculus::Step, input: f64, output: f64, output_gradient: f64) -> f64 {
    let Some(weight) = step.weight() else { return f64::NAN };
    let g = &weight.geometry;
    let area_out = step.output_shape.area() as f64;
    (g.fan_in * g.kernel * g.kernel) as f64 * g.coverage * area_out * input * input * output_gradient / output
}

fn describe(step: &crate::calculus::Step) -> String {
    use crate::calculus::StepOp;
    match &step.op {
        StepOp::FixedScale { factor, .. } => format!("fixed ×{}", crate::calculus::number(*factor)),
        StepOp::Declared { op, .. } => op.keyword().to_string(),
        StepOp::Block { keyword, .. } => keyword.to_string(),
    }
}

impl Diagnosis {
    /// Several measurements of the same network (e.g. over initializations) pooled: every step's
    /// moments are averaged and the comparisons recomputed from them, each measured value with its
    /// jackknife standard error between the measurements. `None` when `all` is empty or the
    /// measurements are not of one network.
    pub fn mean(all: &[Diagnosis]) -> Option<Diagnosis> {
        let first = all.first()?;
        let consistent = all.iter().all(|d| {
            d.network == first.network
                && d.steps.len() == first.steps.len()
                && d.steps.iter().zip(&first.steps).all(|(a, b)| a.layer == b.layer && a.op == b.op)
        });
        if !consistent {
            return None;
        }
        let steps = (0..first.steps.len())
            .map(|i| {
                let moments: Vec<StepMoments> = all.iter().map(|d| d.steps[i].moments).collect();
                let pooled = first.steps[i].with_moments(StepMoments::mean(&moments));
                if moments.len() < 2 {
                    return pooled;
                }
                let left_out: Vec<StepDiagnosis> = (0..moments.len())
                    .map(|j| {
                        let rest: Vec<StepMoments> =
                            moments.iter().enumerate().filter(|(k, _)| *k != j).map(|(_, m)| *m).collect();
                        first.steps[i].with_moments(StepMoments::mean(&rest))
                    })
                    .collect();
                pooled.with_standard_errors(&left_out)
            })
            .collect();
        Some(Diagnosis {
            network: first.network.clone(),
            initializations: all.iter().map(|d| d.initializations).sum(),
            samples: first.samples,
            steps,
        })
    }

    /// The diagnosis as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("diagnosis serializes")
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::calculus::number;
        let ratio = |c: Option<Compared>| c.map_or(String::new(), |c| format!("{:.3}", c.ratio()));
        writeln!(
            f,
            "{}: measured/predicted over {} initialization(s) x {} samples (batch-size-1 semantics)",
            self.network, self.initializations, self.samples
        )?;
        writeln!(
            f,
            "{:>4}  {:<10} {:<12} {:>10} {:>7}  {:>10} {:>7}  {:>7}  {:>10} {:>12} {:>8} {:>10}  {:>7}",
            "step",
            "layer",
            "op",
            "E[x²]",
            "ratio",
            "E[dx²]",
            "ratio",
            "ς ratio",
            "γ",
            "ratio",
            "x~dy",
            "γ extr.",
            "γ_b rat"
        )?;
        for s in &self.steps {
            let gamma_ratio = s.gamma.map_or(String::new(), |g| {
                let error = g.ratio_standard_error().map_or(String::new(), |e| format!("±{e:.3}"));
                format!("{:.3}{error}", g.ratio())
            });
            writeln!(
                f,
                "{:>4}  {:<10} {:<12} {:>10} {:>7.3}  {:>10} {:>7.3}  {:>7.3}  {:>10} {:>12} {:>8} {:>10}  {:>7}",
                s.step,
                s.layer,
                s.op,
                number(s.forward.measured),
                s.forward.ratio(),
                number(s.backward.measured),
                s.backward.ratio(),
                s.scaling.ratio(),
                s.gamma.map_or(String::new(), |g| number(g.measured)),
                gamma_ratio,
                s.gradient_correlation.map_or(String::new(), |c| format!("{c:.3}")),
                s.extrinsic_gamma.map_or(String::new(), number),
                ratio(s.bias_gamma),
            )?;
        }
        writeln!(
            f,
            "ratio: measured/predicted (± standard error between initializations); x~dy: E[dW²] over its value if the \
             layer's input and output gradient were uncorrelated (assumption 2)"
        )
    }
}

/// The first quartile, median and third quartile of the finite values (nearest rank), or `None`
/// when there are none.
pub fn quartiles(values: &[f64]) -> Option<[f64; 3]> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    Some([at(0.25), at(0.5), at(0.75)])
}

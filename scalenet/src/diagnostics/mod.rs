//! Measuring what the calculus predicts on a real network at initialization.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;

mod coordinate;
mod gauss_newton;

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

/// `E[W^2]` of every variable in `varmap` whose name ends in `.weight`.
pub fn weight_second_moments(varmap: &VarMap) -> Result<BTreeMap<String, f64>> {
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    vars.iter()
        .filter(|(name, _)| name.ends_with(".weight"))
        .map(|(name, var)| Ok((name.clone(), second_moment(var.as_tensor())?)))
        .collect()
}

/// The weight-to-gradient ratio `E[dW^2]/E[W^2]` of every `.weight` variable (Theorem 1: it equals
/// gamma), with batch-size-1 semantics.
///
/// The loss is `sum(y * N)` for i.i.d. standard normal `N` drawn from `seed`: each sample's
/// backward signal is independent of the others' and uncorrelated with the output, so the
/// per-sample weight gradients are uncorrelated and `E[dW_batch^2] = B E[dW_sample^2]`. (The
/// gradient of one shared quadratic loss would add the samples coherently in the last layer.)
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
    pub measured: f64,
    pub predicted: f64,
}

impl Compared {
    pub fn ratio(&self) -> f64 {
        self.measured / self.predicted
    }

    fn mean(values: &[Compared]) -> Compared {
        let n = values.len().max(1) as f64;
        Compared {
            measured: values.iter().map(|c| c.measured).sum::<f64>() / n,
            predicted: values.iter().map(|c| c.predicted).sum::<f64>() / n,
        }
    }
}

/// One top-level step of a network, measured at initialization.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepDiagnosis {
    pub step: usize,
    /// Parameter path (empty for steps without parameters).
    pub layer: String,
    pub op: String,
    /// `E[x^2]` of the step's output.
    pub forward: Compared,
    /// `E[dx^2]` of the step's output, per sample.
    pub backward: Compared,
    /// The activation scaling factor, eq. (1).
    pub scaling: Compared,
    /// `E[dW^2]/E[W^2]` (Theorem 1), for convolutions and linear layers.
    pub gamma: Option<Compared>,
    /// Eq. (2), second form, from the measured moments around the layer:
    /// `n_in k^2 cov rho_out^2 E[x_in^2]^2 E[dy^2] / E[y^2]`.
    pub extrinsic_gamma: Option<f64>,
    /// Eq. (7): `rho_out^2 E[dy^2] / E[y^2]`, where the layer adds a bias.
    pub bias_gamma: Option<Compared>,
}

/// Per-step measurements of a network against its plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnosis {
    pub network: String,
    /// Initializations averaged.
    pub initializations: usize,
    pub samples: usize,
    pub steps: Vec<StepDiagnosis>,
}

/// Measures every top-level step of `net` (whose variables are in `varmap`) on `input`, with
/// batch-size-1 semantics: the loss is `sum(y * N)` for i.i.d. standard normal `N` drawn from
/// `seed`, so each sample's backward signal is independent. Zero "probe" variables added after
/// every step give `dL/dx` there (candle's `GradStore` keeps no gradient of intermediate tensors).
/// Forward moments are measured in evaluation mode (dropout off), as the calculus predicts them.
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
    let output = net.forward_hooked(input, false, Some(&mut hook))?;
    let signal = seeded_normal(&output, seed)?;
    let grads = (&output * signal)?.sum_all()?.backward()?;
    let measured_ratios = ratios_from_gradients(varmap, &grads, input.dim(0)?)?;
    let input_second = second_moment(input)?;
    let mut rows = Vec::with_capacity(plan.steps.len());
    for (index, step) in plan.steps.iter().enumerate() {
        let forward = second_moment(&outputs[index])?;
        let backward = match grads.get(probes[index].as_tensor()) {
            Some(gradient) => second_moment(gradient)?,
            None => 0.0,
        };
        let numel = step.output_shape.numel() as f64;
        let previous = if index == 0 { input_second } else { second_moment(&outputs[index - 1])? };
        let area_out = step.output_shape.area() as f64;
        rows.push(StepDiagnosis {
            step: index,
            layer: step.name.clone(),
            op: describe(step),
            forward: Compared { measured: forward, predicted: step.forward.second },
            backward: Compared { measured: backward, predicted: step.backward },
            scaling: Compared { measured: numel * backward * forward, predicted: step.scaling },
            gamma: step.weight().and_then(|_| {
                let measured = measured_ratios.get(&format!("{}.weight", step.name))?;
                Some(Compared { measured: *measured, predicted: step.gamma? })
            }),
            extrinsic_gamma: step.weight().map(|_| extrinsic_gamma(step, previous, forward, backward)),
            bias_gamma: step
                .bias_gamma
                .map(|predicted| Compared { measured: area_out * backward / forward, predicted }),
        });
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
    /// The mean of several measurements of the same network (e.g. over initializations).
    pub fn mean(all: &[Diagnosis]) -> Option<Diagnosis> {
        let first = all.first()?;
        let mean_of = |pick: &dyn Fn(&StepDiagnosis) -> Option<Compared>, i: usize| -> Option<Compared> {
            let values: Option<Vec<Compared>> = all.iter().map(|d| pick(&d.steps[i])).collect();
            values.map(|v| Compared::mean(&v))
        };
        let steps = (0..first.steps.len())
            .map(|i| StepDiagnosis {
                forward: mean_of(&|s| Some(s.forward), i).expect("always"),
                backward: mean_of(&|s| Some(s.backward), i).expect("always"),
                scaling: mean_of(&|s| Some(s.scaling), i).expect("always"),
                gamma: mean_of(&|s| s.gamma, i),
                bias_gamma: mean_of(&|s| s.bias_gamma, i),
                extrinsic_gamma: all
                    .iter()
                    .map(|d| d.steps[i].extrinsic_gamma)
                    .sum::<Option<f64>>()
                    .map(|s| s / all.len() as f64),
                ..first.steps[i].clone()
            })
            .collect();
        Some(Diagnosis {
            network: first.network.clone(),
            initializations: all.iter().map(|d| d.initializations).sum(),
            samples: first.samples,
            steps,
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("diagnosis serializes")
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::calculus::number;
        writeln!(
            f,
            "{}: measured/predicted over {} initialization(s) x {} samples (batch-size-1 semantics)",
            self.network, self.initializations, self.samples
        )?;
        writeln!(
            f,
            "{:>4}  {:<10} {:<12} {:>10} {:>7}  {:>10} {:>7}  {:>7}  {:>10} {:>7} {:>10}  {:>7}",
            "step", "layer", "op", "E[x²]", "ratio", "E[dx²]", "ratio", "ς ratio", "γ", "ratio", "γ extr.", "γ_b rat"
        )?;
        for s in &self.steps {
            let (gamma, gamma_ratio) =
                s.gamma.map_or((String::new(), String::new()), |g| (number(g.measured), format!("{:.3}", g.ratio())));
            writeln!(
                f,
                "{:>4}  {:<10} {:<12} {:>10} {:>7.3}  {:>10} {:>7.3}  {:>7.3}  {:>10} {:>7} {:>10}  {:>7}",
                s.step,
                s.layer,
                s.op,
                number(s.forward.measured),
                s.forward.ratio(),
                number(s.backward.measured),
                s.backward.ratio(),
                s.scaling.ratio(),
                gamma,
                gamma_ratio,
                s.extrinsic_gamma.map_or(String::new(), number),
                s.bias_gamma.map_or(String::new(), |b| format!("{:.3}", b.ratio())),
            )?;
        }
        Ok(())
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

//! Blocks of the Gauss-Newton matrix, measured with first-order autodiff only (section 5.1,
//! Appendices F and G).
//!
//! For a random quadratic loss `L_b = 1/2 y_bᵀ R_b y_b` on each sample's output, the Gauss-Newton
//! matrix of one sample is `G_b = J_bᵀ R_b J_b`, with `J_b` the Jacobian of the output with respect
//! to all weights; its block `(l, m)` is `G_lm = J_lᵀ R J_m`. A product `G_lm r` takes two steps:
//!
//! 1. `J_m r` is the directional derivative of the output along `r` in the weights `W_m`. A ReLU
//!    network is piecewise linear in `W_m`, so a finite difference `(y(W_m + h r) - y(W_m)) / h`
//!    is exact except where a unit changes sign within the step: a fraction of units of the order
//!    of the step's relative size (1e-3 here), each then off by about as much.
//! 2. `J_lᵀ (R J_m r)` for every `l` at once is the weight gradient of `Σ_b u_bᵀ y_b` with the
//!    constant `u_b = R_b (J_m r)_b`: one backward pass.
//!
//! Each sample gets its own `R_b`, and for the weight layers at the top level of the network
//! (those the forward hook sees) each sample's product `(G_lm r)_b` is formed and squared on its
//! own ([`super::per_sample`]), which is the batch-size-1 semantics the calculus is stated in.
//! Inside residual blocks the batch product is squared instead: the samples still add up
//! uncorrelated (`R_b` has zero mean and is independent of everything else), so
//! `E‖Σ_b G_b r‖² = B E‖G_b r‖²`, but that estimate is much noisier.

use super::per_sample::LayerInput;
use super::{extrinsic_gamma, second_moment, seeded_normal};
use crate::Network;
use candle_core::{Result, Tensor, Var, D};
use candle_nn::VarMap;

/// Relative size of the finite-difference step in the weights.
const STEP: f64 = 1e-3;

/// Estimates of every block of the Gauss-Newton matrix, per sample, for one network and batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GaussNewton {
    /// Weight parameters in plan order (`conv1.weight`, ...).
    pub layers: Vec<String>,
    /// Number of weights in each layer.
    pub sizes: Vec<usize>,
    /// `blocks[l][m] = E_b‖G_lm,b r‖² / sqrt(n_l n_m)` for `r` standard normal over `W_m`: an unbiased
    /// estimate of the mean squared singular value of the block, `‖G_lm‖_F² / sqrt(n_l n_m)`.
    /// On the diagonal this is the paper's `E[(G_l r)^2]` (Theorem 2).
    pub blocks: Vec<Vec<f64>>,
    /// The scaling factor of eq. (2), second form, from this batch's measured moments, for weight
    /// layers at the top level of the network (`None` inside residual blocks, which the forward
    /// hook does not see).
    pub scaling: Vec<Option<f64>>,
}

impl GaussNewton {
    /// `E[(G_l r)^2]`, the diagonal blocks.
    pub fn diagonal(&self) -> Vec<f64> {
        (0..self.layers.len()).map(|l| self.blocks[l][l]).collect()
    }

    /// Eq. (2) over `E[(G_l r)^2]` for every layer that has both (Fig. 1's ratio).
    pub fn scaling_ratios(&self) -> Vec<Option<f64>> {
        self.scaling.iter().zip(self.diagonal()).map(|(s, d)| s.map(|s| s / d)).collect()
    }

    /// Largest over smallest diagonal block: 1 for a perfectly balanced network.
    pub fn diagonal_spread(&self) -> f64 {
        let diagonal = self.diagonal();
        let max = diagonal.iter().copied().fold(f64::MIN, f64::max);
        let min = diagonal.iter().copied().fold(f64::MAX, f64::min);
        max / min
    }

    /// The element-wise mean of several estimates of the same network's blocks.
    pub fn mean(all: &[GaussNewton]) -> Option<GaussNewton> {
        let first = all.first()?;
        let n = all.len() as f64;
        let size = first.layers.len();
        let blocks = (0..size)
            .map(|l| (0..size).map(|m| all.iter().map(|g| g.blocks[l][m]).sum::<f64>() / n).collect())
            .collect();
        let scaling = (0..size).map(|l| all.iter().map(|g| g.scaling[l]).sum::<Option<f64>>().map(|s| s / n)).collect();
        Some(GaussNewton { layers: first.layers.clone(), sizes: first.sizes.clone(), blocks, scaling })
    }

    /// The blocks as CSV: a header of layer names, then one row per layer `l` with `blocks[l][m]`.
    pub fn to_csv(&self) -> String {
        let mut csv = format!("layer,{}\n", self.layers.join(","));
        for (name, row) in self.layers.iter().zip(&self.blocks) {
            let values: Vec<String> = row.iter().map(|v| format!("{v:e}")).collect();
            csv.push_str(&format!("{name},{}\n", values.join(",")));
        }
        csv
    }
}

/// Measures every block of the per-sample Gauss-Newton matrix of `net` (variables in `varmap`)
/// on `input`, for the random quadratic loss `1/2 y_bᵀ R_b y_b` with symmetric `R_b = (A_b +
/// A_bᵀ)/√2`, `A_b` i.i.d. standard normal, drawn from `seed` (as are the probe vectors `r`).
///
/// Cost: one forward and backward pass, then per weight layer one forward and one backward pass.
/// The network must be in evaluation semantics (dropout off), as the calculus's moments are.
pub fn gauss_newton<N: Network>(net: &N, varmap: &VarMap, input: &Tensor, seed: u64) -> Result<GaussNewton> {
    let plan = N::plan();
    let weights: Vec<(String, Var)> = {
        let vars = varmap.data().lock().expect("varmap lock poisoned");
        plan.weight_steps()
            .map(|step| {
                let name = format!("{}.weight", step.path);
                let var = vars.get(&name).cloned().ok_or_else(|| {
                    candle_core::Error::Msg(format!("no variable `{name}` in the varmap of {}", N::NAME))
                })?;
                Ok((name, var))
            })
            .collect::<Result<_>>()?
    };

    // The base pass: step moments, the output, and the per-sample Hessians of the loss.
    let mut outputs = Vec::with_capacity(plan.steps.len());
    let mut probes = Vec::with_capacity(plan.steps.len());
    let mut hook = |_: usize, xs: Tensor| -> Result<Tensor> {
        let probe = Var::zeros(xs.shape(), xs.dtype(), xs.device())?;
        let probed = (&xs + probe.as_tensor())?;
        outputs.push(xs);
        probes.push(probe);
        Ok(probed)
    };
    let output = net.forward_hooked(input, false, Some(&mut hook))?;
    let (batch, classes) = output.dims2()?;
    let a = seeded_normal(&Tensor::zeros((batch, classes, classes), output.dtype(), output.device())?, seed)?;
    let hessians = ((&a + a.transpose(1, 2)?)? / std::f64::consts::SQRT_2)?;
    let apply_hessians =
        |v: &Tensor| -> Result<Tensor> { hessians.matmul(&v.unsqueeze(D::Minus1)?)?.squeeze(D::Minus1) };
    let output_gradient = apply_hessians(&output.detach())?;
    let grads = (&output * &output_gradient)?.sum_all()?.backward()?;

    let input_second = second_moment(input)?;
    let mut scaling_by_path = std::collections::HashMap::new();
    for (index, step) in plan.steps.iter().enumerate() {
        if step.weight().is_none() {
            continue;
        }
        let previous = if index == 0 { input_second } else { second_moment(&outputs[index - 1])? };
        let gradient = match grads.get(probes[index].as_tensor()) {
            Some(g) => second_moment(g)?,
            None => 0.0,
        };
        scaling_by_path
            .insert(step.name.clone(), extrinsic_gamma(step, previous, second_moment(&outputs[index])?, gradient));
    }
    let scaling = plan.weight_steps().map(|s| scaling_by_path.get(s.path).copied()).collect();
    // Weight layers at the top level, whose inputs and output gradients the probes see: their
    // blocks are formed one sample at a time.
    let top_level: Vec<Option<(usize, LayerInput)>> = plan
        .weight_steps()
        .map(|s| match plan.steps.iter().position(|step| step.weight().is_some() && step.name == s.path) {
            Some(index) => {
                let layer_input = if index == 0 { input } else { &outputs[index - 1] };
                Ok(Some((index, LayerInput::new(&plan.steps[index], layer_input)?)))
            }
            None => Ok(None),
        })
        .collect::<Result<_>>()?;

    let sizes: Vec<usize> = weights.iter().map(|(_, v)| v.elem_count()).collect();
    let count = weights.len();
    let mut blocks = vec![vec![0.0; count]; count];
    for (m, (_, var)) in weights.iter().enumerate() {
        let original = var.as_tensor().copy()?;
        let direction = seeded_normal(&original, seed.wrapping_add(1 + m as u64))?;
        let step = STEP * second_moment(&original)?.sqrt();
        var.set(&(&original + (&direction * step)?)?)?;
        let moved = net.forward_hooked(input, false, None);
        var.set(&original)?;
        let jvp = ((moved?.detach() - output.detach())? / step)?;
        let grads = (&output * apply_hessians(&jvp)?)?.sum_all()?.backward()?;
        for (l, (name, var_l)) in weights.iter().enumerate() {
            let per_sample_moment = match &top_level[l] {
                Some((index, layer_input)) => {
                    let gradient = grads.get(probes[*index].as_tensor()).ok_or_else(|| {
                        candle_core::Error::Msg(format!("`{name}` of {} gets no gradient from the output", N::NAME))
                    })?;
                    layer_input.weight_gradient_moment(gradient)?
                }
                None => {
                    let product = grads.get(var_l.as_tensor()).ok_or_else(|| {
                        candle_core::Error::Msg(format!("`{name}` of {} gets no gradient from the output", N::NAME))
                    })?;
                    second_moment(product)? / batch as f64
                }
            };
            blocks[l][m] = per_sample_moment * sizes[l] as f64 / ((sizes[l] * sizes[m]) as f64).sqrt();
        }
    }
    Ok(GaussNewton { layers: weights.into_iter().map(|(name, _)| name).collect(), sizes, blocks, scaling })
}

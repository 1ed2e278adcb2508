//! Measuring what the calculus predicts on a real network at initialization.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;

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
    let batch = output.dim(0)? as f64;
    let signal = seeded_normal(output, seed)?;
    let grads = (output * signal)?.sum_all()?.backward()?;
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    let mut ratios = BTreeMap::new();
    for (name, var) in vars.iter().filter(|(name, _)| name.ends_with(".weight")) {
        let Some(gradient) = grads.get(var.as_tensor()) else {
            continue;
        };
        ratios.insert(name.clone(), second_moment(gradient)? / batch / second_moment(var.as_tensor())?);
    }
    Ok(ratios)
}

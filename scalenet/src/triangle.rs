//! The triangle reparameterization (Milkert, Hyde & Laine, ICML 2025): a width-4 ReLU network of
//! one input whose weights are functions of a few peaks, so that at initialization it computes
//! `F(x) = sum_i s_i W_i(x)`, a sum of compositions of triangle maps, with `2^d` linear pieces for
//! `d` hidden layers; a default init typically gives a handful.
//!
//! ```text
//! T_a(x) = relu(x)/a - relu(x - a)/(a - a^2)      a triangle on [0, 1] with its peak 1 at a
//! W_i    = T_(a_i) o ... o T_(a_0)                 2^(i+1) pieces
//! ```
//!
//! The network is any `network!` declaration of the form `input: [1], linear(4), relu, linear(4),
//! relu, ..., linear(1)` (biases on; fixed scalars of the calculus are compensated when the weights
//! are written). Its hidden units are `[sum, t1, t2, bias]`; the first layer makes
//! `[relu(u x + v), x, relu(x - a_0), 1]` and hidden layer `i` maps, with `S_i = s_i / s_(i-1)`,
//!
//! ```text
//! sum'  = sum + (S_i/a_i) t1 - S_i/(a_i - a_i^2) t2
//! t1'   =       (S_i/a_i) t1 - S_i/(a_i - a_i^2) t2                        = s_i W_i
//! t2'   =       (S_i/a_i) t1 - S_i/(a_i - a_i^2) t2 - S_i a_(i+1) bias     = relu(s_i (W_i - a_(i+1)))
//! bias' = S_i bias                                                          = s_i
//! ```
//!
//! and the output is `c (sum + s_(d-1) W_(d-1)) + e = c (relu(u x + v) + F(x)) + e`. With
//! `s_(i+1) = s_i (1 - a_(i+1)) a_(i+2)` (the differentiable constraint, which uses one peak
//! `a_d` beyond the network's) every kink of `F` where a `W_k` peaks is cancelled by the valleys of
//! the later `W_j` up to `-s_k prod (1 - a_j)`: `F` is concave and nearly smooth, so a convex target
//! is the affine part `c (u x + v) + e` minus it (for `x^2` and `a_i = 1/2` this is Yarotsky's
//! construction). Training follows the paper: [`Triangle::pretrain`] fits the peaks, `s_0` and the
//! affine maps through the parameterization with Adam; [`Triangle::release`] writes the weights
//! into the generated network, whose raw weights are then trained directly.

use crate::calculus::{Op, Plan, StepOp};
use crate::Network;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};

/// Why a network cannot carry the triangle parameterization.
#[derive(Debug, thiserror::Error)]
pub enum TriangleError {
    #[error("{network}: {problem}; the triangle parameterization needs `input: [1], linear(4), relu, ..., linear(4), relu, linear(1)` with biases")]
    /// The network is not a triangle network's shape.
    Shape {
        /// The network, by name.
        network: &'static str,
        /// What is wrong.
        problem: String,
    },
    #[error("{network}: parameter `{name}` is not in the VarMap; create the network in it first")]
    /// A parameter is not in the VarMap.
    Missing {
        /// The network, by name.
        network: &'static str,
        /// The tensor or parameter at fault.
        name: String,
    },
    #[error(transparent)]
    /// An error of candle's.
    Candle(#[from] candle_core::Error),
}

/// The peaks, scale and affine maps of a triangle network of `depth` hidden layers.
#[derive(Debug)]
pub struct Triangle {
    depth: usize,
    /// `logit(a_i)` for `i = 0..=depth` (the last peak only enters the constraint).
    peak_logits: Var,
    /// `log s_0`.
    log_scale: Var,
    /// `[u, v, c, e]`: the sum unit's input map `relu(u x + v)` and the output map `c (.) + e`.
    affine: Var,
}

impl Triangle {
    /// Random peaks `a_i ~ U(0.25, 0.75)` from `seed`, `s_0 = 1/4`, and the affine maps of
    /// `x - F(x)` (`u = -1, v = 2, c = -1, e = 2`: the sum unit's own kink stays outside [0, 1]).
    /// `depth >= 1`.
    pub fn new(depth: usize, seed: u64, device: &Device) -> candle_core::Result<Self> {
        if depth == 0 {
            candle_core::bail!("a triangle network needs at least one hidden layer");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let uniform = Uniform::new(0.25f64, 0.75).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let peaks: Vec<f64> = (0..=depth).map(|_| uniform.sample(&mut rng)).collect();
        Self::from_peaks(&peaks, 0.25, device)
    }

    /// Given peaks `a_0..=a_depth` (each in (0, 1)) and `s_0 > 0`.
    pub fn from_peaks(peaks: &[f64], scale: f64, device: &Device) -> candle_core::Result<Self> {
        if peaks.len() < 2 || peaks.iter().any(|&a| !(a > 0.0 && a < 1.0)) || !(scale > 0.0 && scale.is_finite()) {
            candle_core::bail!("peaks must lie in (0, 1), at least two of them, and the scale must be positive");
        }
        let logits: Vec<f64> = peaks.iter().map(|&a| (a / (1.0 - a)).ln()).collect();
        Ok(Triangle {
            depth: peaks.len() - 1,
            peak_logits: Var::from_tensor(&Tensor::new(logits, device)?)?,
            log_scale: Var::from_tensor(&Tensor::new(scale.ln(), device)?)?,
            affine: Var::from_tensor(&Tensor::new(&[-1.0f64, 2.0, -1.0, 2.0], device)?)?,
        })
    }

    /// Hidden layers.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The parameters pretraining moves.
    pub fn vars(&self) -> Vec<Var> {
        vec![self.peak_logits.clone(), self.log_scale.clone(), self.affine.clone()]
    }

    /// The peaks `a_0..=a_depth`.
    pub fn peaks(&self) -> candle_core::Result<Vec<f64>> {
        candle_nn::ops::sigmoid(self.peak_logits.as_tensor())?.to_vec1::<f64>()
    }

    /// The weights `(W [out, in], b [out])` of the `depth + 1` linear layers, differentiable in
    /// the parameters.
    pub fn layers(&self) -> candle_core::Result<Vec<(Tensor, Tensor)>> {
        let device = self.peak_logits.device();
        let a = candle_nn::ops::sigmoid(self.peak_logits.as_tensor())?;
        let peak = |i: usize| a.get(i);
        let [u, v, c, e] = [0, 1, 2, 3].map(|i| self.affine.as_tensor().get(i));
        let (u, v, c, e) = (u?, v?, c?, e?);
        let one = Tensor::new(1f64, device)?;
        let zero = Tensor::new(0f64, device)?;
        let row = |entries: &[&Tensor]| Tensor::stack(entries, 0);
        let mut layers = Vec::with_capacity(self.depth + 1);
        // Input layer: [relu(u x + v), x, relu(x - a_0), 1].
        let a0 = peak(0)?;
        layers
            .push((Tensor::stack(&[&u, &one, &one, &zero], 0)?.reshape((4, 1))?, row(&[&v, &zero, &a0.neg()?, &one])?));
        // S_0 = s_0, S_i = (1 - a_i) a_(i+1).
        let mut ratio = self.log_scale.as_tensor().exp()?;
        for i in 0..self.depth {
            let a_i = peak(i)?;
            let rise = (&ratio / &a_i)?;
            let fall = (&ratio / (&a_i - a_i.sqr()?)?)?.neg()?;
            if i + 1 < self.depth {
                let next_peak = peak(i + 1)?;
                let weight = Tensor::stack(
                    &[
                        row(&[&one, &rise, &fall, &zero])?,
                        row(&[&zero, &rise, &fall, &zero])?,
                        row(&[&zero, &rise, &fall, &(&ratio * &next_peak)?.neg()?])?,
                        row(&[&zero, &zero, &zero, &ratio])?,
                    ],
                    0,
                )?;
                layers.push((weight, Tensor::zeros(4, DType::F64, device)?));
                ratio = ((one.clone() - &next_peak)? * peak(i + 2)?)?;
            } else {
                let weight = row(&[&c, &(&c * &rise)?, &(&c * &fall)?, &zero])?.reshape((1, 4))?;
                layers.push((weight, e.reshape(1)?));
            }
        }
        Ok(layers)
    }

    /// `[batch, 1] -> [batch, 1]` through the parameterization.
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let layers = self.layers()?;
        let last = layers.len() - 1;
        let mut h = xs.to_dtype(DType::F64)?;
        for (index, (weight, bias)) in layers.iter().enumerate() {
            h = h.matmul(&weight.t()?)?.broadcast_add(bias)?;
            if index < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// Pretraining: `steps` full-batch Adam steps at `learning_rate` on the mean squared error
    /// of `forward(xs)` against `ys` (`[batch, 1]`). Returns the loss before each step.
    pub fn pretrain(
        &self,
        xs: &Tensor,
        ys: &Tensor,
        steps: usize,
        learning_rate: f64,
    ) -> candle_core::Result<Vec<f64>> {
        let mut adam =
            AdamW::new(self.vars(), ParamsAdamW { lr: learning_rate, weight_decay: 0.0, ..Default::default() })?;
        let ys = ys.to_dtype(DType::F64)?;
        let mut losses = Vec::with_capacity(steps);
        for _ in 0..steps {
            let loss = (self.forward(xs)? - &ys)?.sqr()?.mean_all()?;
            losses.push(loss.to_scalar::<f64>()?);
            adam.backward_step(&loss)?;
        }
        Ok(losses)
    }

    /// Checks that `N` has the triangle network's form and writes the current weights into its
    /// variables in `varmap`, divided by the fixed scalars its plan inserts (and the output
    /// calibration), so that the generated network computes exactly [`Self::forward`].
    pub fn release<N: Network>(&self, varmap: &VarMap) -> Result<(), TriangleError> {
        let compensation = check_form(N::NAME, N::plan(), self.depth)?;
        let vars = varmap.data().lock().expect("varmap lock poisoned");
        let get = |name: &str| {
            vars.get(name).cloned().ok_or_else(|| TriangleError::Missing { network: N::NAME, name: name.to_string() })
        };
        let calibration = match vars.get("output_calibration") {
            Some(var) => var.as_tensor().to_dtype(DType::F64)?.to_scalar::<f64>()?,
            None => 1.0,
        };
        let layers = self.layers()?;
        let count = layers.len();
        for (index, ((weight, bias), (path, before, after))) in layers.iter().zip(&compensation).enumerate() {
            let after = if index + 1 == count { after * calibration } else { *after };
            let weight_var = get(&format!("{path}.weight"))?;
            let bias_var = get(&format!("{path}.bias"))?;
            weight_var.set(&(weight / (before * after))?.to_dtype(weight_var.dtype())?)?;
            bias_var.set(&(bias / after)?.to_dtype(bias_var.dtype())?)?;
        }
        Ok(())
    }
}

/// For each weight layer of the triangle form: its path, the product of fixed scalars between
/// the previous weight layer and it, and (for the last) the fixed scalars after it.
fn check_form(network: &'static str, plan: &Plan, depth: usize) -> Result<Vec<(String, f64, f64)>, TriangleError> {
    let fail = |problem: String| TriangleError::Shape { network, problem };
    if plan.input.numel() != 1 {
        return Err(fail(format!("its input is {}", plan.input)));
    }
    let mut layers: Vec<(String, f64, f64)> = Vec::new();
    let mut scale = 1.0;
    let mut relus_since = 0;
    for step in &plan.steps {
        match &step.op {
            StepOp::FixedScale { factor, .. } => scale *= factor,
            StepOp::Declared { op: Op::Relu, .. } => relus_since += 1,
            StepOp::Declared { op: Op::Linear { bias, .. }, .. } => {
                let expected_relus = usize::from(!layers.is_empty());
                if relus_since != expected_relus {
                    return Err(fail(format!(
                        "`{}` follows {relus_since} relu layers, not {expected_relus}",
                        step.name
                    )));
                }
                if !bias {
                    return Err(fail(format!("`{}` has no bias", step.name)));
                }
                layers.push((step.name.clone(), scale, 1.0));
                scale = 1.0;
                relus_since = 0;
            }
            _ => {
                let op = step.op_keyword().unwrap_or("block");
                return Err(fail(format!("it has a `{op}` layer")));
            }
        }
    }
    if relus_since != 0 {
        return Err(fail("it ends with a relu".to_string()));
    }
    if layers.len() != depth + 1 {
        return Err(fail(format!(
            "it has {} linear layers, the parameterization {} ({depth} hidden)",
            layers.len(),
            depth + 1
        )));
    }
    let outputs: Vec<usize> = plan.weight_steps().map(|s| s.step.output_shape.numel()).collect();
    if outputs.last() != Some(&1) || outputs[..outputs.len() - 1].iter().any(|&n| n != 4) {
        return Err(fail(format!("its widths are {outputs:?}")));
    }
    if let Some(last) = layers.last_mut() {
        last.2 = scale;
    }
    Ok(layers)
}

/// Mean squared error of `[batch, 1]` predictions.
pub fn mse(predictions: &Tensor, targets: &Tensor) -> candle_core::Result<f64> {
    (predictions.to_dtype(DType::F64)? - targets.to_dtype(DType::F64)?)?.sqr()?.mean_all()?.to_scalar::<f64>()
}

/// Adam on every variable of `varmap` for `steps` full-batch steps of the mean squared error of
/// `forward(xs)` against `ys`; returns the loss before each step.
pub fn train_mse(
    varmap: &VarMap,
    forward: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    xs: &Tensor,
    ys: &Tensor,
    steps: usize,
    learning_rate: f64,
) -> candle_core::Result<Vec<f64>> {
    let vars: Vec<Var> = varmap
        .data()
        .lock()
        .expect("varmap lock poisoned")
        .iter()
        .filter(|(name, _)| name.as_str() != "output_calibration")
        .map(|(_, var)| var.clone())
        .collect();
    let mut adam = AdamW::new(vars, ParamsAdamW { lr: learning_rate, weight_decay: 0.0, ..Default::default() })?;
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let loss = (forward(xs)?.to_dtype(DType::F64)? - ys.to_dtype(DType::F64)?)?.sqr()?.mean_all()?;
        losses.push(loss.to_scalar::<f64>()?);
        adam.backward_step(&loss)?;
    }
    Ok(losses)
}

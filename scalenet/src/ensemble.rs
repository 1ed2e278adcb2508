//! A population of independent copies of one network, trained in one step: every parameter has
//! a leading population dimension and every linear layer is one batched matrix product, so a
//! sweep over seeds and learning rates (the paper's Table 2: 4 inits x 14 rates x 10 seeds per
//! dataset) costs a few large operations per step instead of hundreds of small ones.
//!
//! Each copy keeps its own seed (its initial values are exactly those of the generated network's
//! `new_seeded(seed)`), its own minibatches and its own learning rate, and follows the same
//! trajectory as the copy trained alone ([`EnsembleSgd`] is candle's SGD per copy). Built from a
//! [`Plan`], so it serves networks declared with `network!` (`Net::plan()`) and networks built
//! at run time (`analyze(&spec)`, e.g. for a dataset's own input width).
//!
//! Supported: networks of vectors and images (linear layers and convolutions, Gaussian or
//! mirrored (`init: mirrored`) weights, centred or not, ReLU-family activations, average and
//! global average pooling, fixed and declared scalars, standalone biases, flatten, dropout in
//! evaluation mode) and residual blocks and bottlenecks of them. A convolution runs each copy's own
//! convolution on the CPU (scalenet's kernels) and the copies as the groups of one grouped
//! convolution elsewhere. A layer outside this list is a typed error naming the
//! top-level step it is in.
//!
//! ```
//! use scalenet::candle_core::{DType, Device, Tensor};
//! use scalenet::ensemble::{Ensemble, EnsembleSgd};
//! use scalenet::network;
//!
//! network! { pub struct Mlp { input: [8], fc1: linear(16), relu, fc2: linear(3) } }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let seeds = [0, 1, 2, 3];
//! let ensemble = Ensemble::new(Mlp::plan(), &seeds, DType::F32, &Device::Cpu)?;
//! let mut sgd = EnsembleSgd::new(&ensemble, &[0.1, 0.1, 0.01, 0.01], 0.0)?;
//! let xs = Tensor::randn(0f32, 1., (4, 32, 8), &Device::Cpu)?; // [population, batch, features]
//! let labels = Tensor::zeros((4, 32), DType::U32, &Device::Cpu)?;
//! let losses = sgd.step(&ensemble, &xs, &labels)?; // one loss per copy
//! assert_eq!(losses.len(), 4);
//! # Ok(())
//! # }
//! ```

mod host;

pub use host::HostEnsemble;

use crate::calculus::{Op, ParamInit, Plan, Step, StepOp};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarMap;

/// Why a plan cannot run as an ensemble, or a candle error.
#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    #[error("step {step} (`{op}`) is not supported by ensembles yet; they run linear and conv layers, activations, pooling, scalars, biases, flatten, dropout and residual blocks of them")]
    /// The plan has a step ensembles do not run.
    Unsupported {
        /// The top-level step at fault (or holding it, for a step inside a block), as in
        /// `plan().steps`.
        step: usize,
        /// The step's op.
        op: String,
    },
    #[error("an ensemble needs at least one copy")]
    /// An ensemble of no copies.
    Empty,
    #[error("{what}: expected {expected}, got {got:?}")]
    /// A tensor of the wrong shape.
    Shape {
        /// Which tensor.
        what: &'static str,
        /// The shape it should have.
        expected: String,
        /// The shape it has.
        got: Vec<usize>,
    },
    #[error(transparent)]
    /// An error of candle's.
    Candle(#[from] candle_core::Error),
}

/// One step of the population's forward pass.
#[derive(Debug)]
enum Layer {
    /// `weight` `[P, in, out]` (each copy's candle-nn weight transposed, so the forward pass is a
    /// batched product of contiguous tensors), `bias` `[P, 1, out]`.
    Linear {
        weight: Var,
        bias: Option<Var>,
        /// `centred_weights`: every forward pass uses each output's weights minus their mean.
        centred: bool,
    },
    /// `weight` `[P, out, in / groups, k, k]`, `bias` `[P, out]`: one grouped convolution over the
    /// copies' channels stacked side by side (`P groups` groups: each copy's own `groups`).
    Conv {
        weight: Var,
        bias: Option<Var>,
        stride: usize,
        padding: usize,
        groups: usize,
        centred: bool,
    },
    /// `alpha S(x) + beta F(x)`: a residual block's main branch `F` and shortcut `S` (empty for
    /// the identity).
    Block {
        alpha: f64,
        beta: f64,
        main: Vec<Layer>,
        shortcut: Vec<Layer>,
    },
    /// A learnable scalar `[P]` times its fixed factor.
    Scalar {
        weight: Var,
        fixed: f64,
    },
    /// A standalone per-channel bias `[P, C]`.
    Bias(Var),
    /// A fixed multiplier (inserted by the calculus, or the user's `scale`).
    Scale(f64),
    LeakyRelu(f64),
    Relu,
    AvgPool(usize),
    GlobalAvgPool,
    /// `[P, B, C, H, W] -> [P, B, C*H*W]`.
    Flatten,
    /// Flatten of vectors and evaluation-mode dropout: nothing to do.
    Identity,
}

/// `t` (`[P, n]` or `[P]`) reshaped to broadcast against activations of `rank` (`[P, B, ...]`):
/// `[P, 1, n, 1, 1]` for images, `[P, 1, n]` for vectors.
fn per_copy(t: &Tensor, rank: usize) -> candle_core::Result<Tensor> {
    let mut shape = vec![t.dim(0)?, 1];
    shape.push(if t.rank() > 1 { t.dim(1)? } else { 1 });
    shape.resize(rank, 1);
    t.reshape(shape)
}

/// Runs `op` on `[P, B, C, H, W]` as `[P * B, C, H, W]` (pooling treats every image alike).
fn merged(xs: &Tensor, op: impl Fn(&Tensor) -> candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
    let dims = xs.dims().to_vec();
    let ys = op(&xs.reshape([&[dims[0] * dims[1]], &dims[2..]].concat())?)?;
    let out = ys.dims().to_vec();
    ys.reshape([&[dims[0], dims[1]], &out[1..]].concat())
}

/// `P` independent copies of one network (see the module documentation).
#[derive(Debug)]
pub struct Ensemble {
    layers: Vec<Layer>,
    /// Output calibration per copy, `[P, 1, 1]`, 1 until [`Ensemble::calibrate_output`].
    calibration: Var,
    population: usize,
    input: crate::calculus::Shape,
}

impl Ensemble {
    /// One copy per seed; copy `p` starts exactly as the generated network's
    /// `new_seeded(.., seeds[p])` (the same draws, by parameter name).
    pub fn new(plan: &Plan, seeds: &[u64], dtype: DType, device: &Device) -> Result<Self, EnsembleError> {
        if seeds.is_empty() {
            return Err(EnsembleError::Empty);
        }
        let copies: Vec<VarMap> = seeds.iter().map(|_| VarMap::new()).collect();
        let builders: Vec<_> = copies
            .iter()
            .zip(seeds)
            .map(|(varmap, &seed)| crate::init::seeded_var_builder(varmap, seed, dtype, device))
            .collect();
        let mut layers = Vec::new();
        for (index, step) in plan.steps.iter().enumerate() {
            layers.push(stacked_layer(&builders, step, "", index)?);
        }
        let calibration = Var::ones((seeds.len(), 1, 1), dtype, device)?;
        Ok(Ensemble { layers, calibration, population: seeds.len(), input: plan.input })
    }

    /// The number of copies.
    pub fn population(&self) -> usize {
        self.population
    }

    /// `[P, B, ...input] -> [P, B, out]`: copy `p` computes on `xs[p]` (`[P, B, D]` for vectors,
    /// `[P, B, C, H, W]` for images). Dropout is off (evaluation).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, EnsembleError> {
        let dims = xs.dims();
        let input = self.input.dims();
        if dims.len() != input.len() + 2 || dims[0] != self.population || dims[2..] != input[..] {
            let expected = format!(
                "[{}, batch, {}]",
                self.population,
                self.input.dims().iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
            return Err(EnsembleError::Shape { what: "ensemble input", expected, got: dims.to_vec() });
        }
        let xs = run(&self.layers, xs.clone())?;
        Ok(xs.broadcast_mul(&self.calibration.as_tensor().detach())?)
    }

    /// Sets each copy's output calibration so that its output on `xs` (`[P, B, D]`) has standard
    /// deviation `target_std` (section 7; the plan's `output_std` by default, 1; the paper's
    /// experiments use 0.05 after one batch).
    pub fn calibrate_output(&self, xs: &Tensor, target_std: f64) -> Result<(), EnsembleError> {
        if !(target_std.is_finite() && target_std > 0.0) {
            return Err(candle_core::Error::Msg(format!(
                "the target std must be positive and finite, got {target_std}"
            ))
            .into());
        }
        let output = self.forward(xs)?.to_dtype(DType::F64)?.flatten_from(1)?;
        let centred = output.broadcast_sub(&output.mean_keepdim(1)?)?;
        let std = centred.sqr()?.mean_keepdim(1)?.sqrt()?;
        let factor = (std.recip()? * target_std)?.reshape((self.population, 1, 1))?;
        let current = self.calibration.as_tensor().to_dtype(DType::F64)?;
        self.calibration.set(&(current * factor)?.to_dtype(self.calibration.dtype())?)?;
        Ok(())
    }

    /// Each copy's softmax cross-entropy on its own examples, `xs` `[P, B, D]` with integer
    /// `labels` `[P, B]`, averaged over the batch: `[P]`.
    pub fn losses(&self, xs: &Tensor, labels: &Tensor) -> Result<Tensor, EnsembleError> {
        let log_probs = candle_nn::ops::log_softmax(&self.forward(xs)?, D::Minus1)?;
        let picked = log_probs.gather(&labels.to_dtype(DType::U32)?.unsqueeze(2)?, 2)?.squeeze(2)?;
        Ok(picked.mean(1)?.neg()?)
    }

    /// The first linear layer's weight, `[P, in, out]` (each copy's candle-nn weight transposed).
    pub fn first_weight(&self) -> Result<Tensor, EnsembleError> {
        self.layers
            .iter()
            .find_map(|layer| match layer {
                Layer::Linear { weight, .. } => Some(weight.as_tensor().clone()),
                _ => None,
            })
            .ok_or_else(|| EnsembleError::Unsupported { step: 0, op: "a network without a linear layer".into() })
    }

    /// Every trainable parameter, each `[P, ...]` (the calibration is not one).
    pub fn vars(&self) -> Vec<Var> {
        fn collect(layers: &[Layer], vars: &mut Vec<Var>) {
            for layer in layers {
                match layer {
                    Layer::Linear { weight, bias, .. } | Layer::Conv { weight, bias, .. } => {
                        vars.push(weight.clone());
                        vars.extend(bias.clone());
                    }
                    Layer::Scalar { weight, .. } | Layer::Bias(weight) => vars.push(weight.clone()),
                    Layer::Block { main, shortcut, .. } => {
                        collect(main, vars);
                        collect(shortcut, vars);
                    }
                    _ => {}
                }
            }
        }
        let mut vars = Vec::new();
        collect(&self.layers, &mut vars);
        vars
    }
}

/// `layers` applied in turn to `xs` (`[P, B, ...]`).
fn run(layers: &[Layer], xs: Tensor) -> candle_core::Result<Tensor> {
    let mut xs = xs;
    for layer in layers {
        xs = match layer {
            Layer::Linear { weight, bias, centred } => {
                // `[P, in, out]`: each output's weights are a column.
                let ys = xs.matmul(&used_weight(weight, *centred, &[1])?)?;
                match bias {
                    Some(bias) => ys.broadcast_add(bias.as_tensor())?,
                    None => ys,
                }
            }
            Layer::Conv { weight, bias, stride, padding, groups, centred } => {
                let weight = used_weight(weight, *centred, &[2, 3, 4])?;
                if xs.device().is_cpu() {
                    // On the CPU, scalenet's own convolution per copy (a grouped convolution of
                    // the copies would fall back to candle's kernels, several times slower).
                    let copies = (0..xs.dim(0)?)
                        .map(|p| {
                            let bias = bias.as_ref().map(|b| b.as_tensor().get(p)).transpose()?;
                            crate::ops::grouped_conv2d_scaled(
                                &xs.get(p)?,
                                &weight.get(p)?,
                                bias.as_ref(),
                                *stride,
                                *padding,
                                *groups,
                                1.0,
                            )
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    Tensor::stack(&copies, 0)?
                } else {
                    let (population, batch) = (xs.dim(0)?, xs.dim(1)?);
                    let (_, channels, height, width) = xs.dims5().map(|(_, b, c, h, w)| (b, c, h, w))?;
                    let (_, out, inputs, kernel, _) = weight.dims5()?;
                    // Copies side by side along the channels: one convolution of `P groups`
                    // groups (copy p's group j is group p groups + j, over contiguous channels).
                    let stacked =
                        xs.transpose(0, 1)?.contiguous()?.reshape((batch, population * channels, height, width))?;
                    let kernels = weight.reshape((population * out, inputs, kernel, kernel))?;
                    let ys = stacked.conv2d(&kernels, *padding, *stride, 1, population * groups)?;
                    let (_, _, out_height, out_width) = ys.dims4()?;
                    let ys =
                        ys.reshape((batch, population, out, out_height, out_width))?.transpose(0, 1)?.contiguous()?;
                    match bias {
                        Some(bias) => ys.broadcast_add(&per_copy(bias.as_tensor(), 5)?)?,
                        None => ys,
                    }
                }
            }
            Layer::Scalar { weight, fixed } => {
                xs.broadcast_mul(&per_copy(&(weight.as_tensor() * *fixed)?, xs.rank())?)?
            }
            Layer::Bias(bias) => xs.broadcast_add(&per_copy(bias.as_tensor(), xs.rank())?)?,
            Layer::Scale(factor) => (xs * *factor)?,
            Layer::LeakyRelu(slope) => candle_nn::ops::leaky_relu(&xs, *slope)?,
            // The generated module's ReLU: zero gradient at exactly zero, as PyTorch (candle's own
            // passes it, and pre-activations are exactly zero wherever a zero bias meets dead inputs).
            Layer::Relu => crate::ops::relu(&xs)?,
            Layer::AvgPool(kernel) => merged(&xs, |x| crate::__private::ops::avg_pool(x, *kernel, *kernel))?,
            Layer::GlobalAvgPool => merged(&xs, crate::__private::ops::global_avg_pool)?,
            Layer::Block { alpha, beta, main, shortcut } => {
                let main = run(main, xs.clone())?;
                let shortcut = run(shortcut, xs)?;
                ((main * *beta)? + (shortcut * *alpha)?)?
            }
            Layer::Flatten => xs.flatten_from(2)?,
            Layer::Identity => xs,
        };
    }
    Ok(xs)
}

/// Each copy's parameter drawn by `make` (as the generated code draws it), stacked over copies.
fn stacked(
    builders: &[candle_nn::VarBuilder],
    make: &dyn Fn(&candle_nn::VarBuilder) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Var> {
    let tensors = builders.iter().map(make).collect::<candle_core::Result<Vec<_>>>()?;
    Var::from_tensor(&Tensor::stack(&tensors, 0)?)
}

/// The population's version of `step`, its parameters at `prefix.name` as the generated code
/// names them (`block.main.name` inside a block's branch); `top` is the top-level step holding it.
fn stacked_layer(
    builders: &[candle_nn::VarBuilder],
    step: &Step,
    prefix: &str,
    top: usize,
) -> Result<Layer, EnsembleError> {
    let unsupported = || EnsembleError::Unsupported { step: top, op: describe(step) };
    let path = if prefix.is_empty() { step.name.clone() } else { format!("{prefix}.{}", step.name) };
    let stack = |make: &dyn Fn(&candle_nn::VarBuilder) -> candle_core::Result<Tensor>| stacked(builders, make);
    Ok(match (&step.op, &step.params) {
        (StepOp::FixedScale { factor, .. }, _) => Layer::Scale(*factor),
        (StepOp::Block { alpha, beta, main, shortcut, .. }, _) => {
            let branch = |steps: &[Step], name: &str| -> Result<Vec<Layer>, EnsembleError> {
                let prefix = format!("{path}.{name}");
                steps.iter().map(|step| stacked_layer(builders, step, &prefix, top)).collect()
            };
            Layer::Block {
                alpha: *alpha,
                beta: *beta,
                main: branch(main, "main")?,
                shortcut: branch(shortcut, "shortcut")?,
            }
        }
        (StepOp::Declared { op: Op::Linear { .. }, .. }, Some(ParamInit::Weight(init))) => {
            let (fan_in, fan_out) = (init.geometry.fan_in, init.geometry.fan_out);
            let linear = |vb: &candle_nn::VarBuilder| {
                crate::mirrored::linear_for(vb.pp(&path), fan_in, fan_out, init.bias, init.std(), init.mirror)
            };
            let weight = stack(&|vb| linear(vb)?.weight().t()?.contiguous())?;
            let bias = match init.bias {
                true => Some(stack(&|vb| linear(vb)?.bias().expect("declared with a bias").unsqueeze(0))?),
                false => None,
            };
            Layer::Linear { weight, bias, centred: init.centred }
        }
        (StepOp::Declared { op: Op::Scalar, .. }, Some(ParamInit::Scalar { value, fixed })) => {
            let weight = stack(&|vb| Ok(crate::nn::Scalar::new(vb.pp(&path), *value, *fixed)?.weight().clone()))?;
            Layer::Scalar { weight, fixed: *fixed }
        }
        (StepOp::Declared { op: Op::Bias, .. }, Some(ParamInit::Bias { channels })) => {
            Layer::Bias(stack(&|vb| Ok(crate::nn::Bias::new(vb.pp(&path), *channels)?.bias().clone()))?)
        }
        (StepOp::Declared { op: Op::Relu, .. }, _) => Layer::Relu,
        (StepOp::Declared { op: Op::LeakyRelu { slope }, .. }, _) => Layer::LeakyRelu(*slope),
        (StepOp::Declared { op: Op::Scale { factor }, .. }, _) => Layer::Scale(*factor),
        (
            StepOp::Declared { op: Op::Conv2d { out_channels, kernel, stride, padding, groups, .. }, .. },
            Some(ParamInit::Weight(init)),
        ) => {
            // The weight is `(out, in / groups, k, k)`: the fan-in is per group.
            let (fan_in, fan_out) = (init.geometry.fan_in, *out_channels);
            let (kernel, stride, padding, groups) = (*kernel, *stride, *padding, *groups);
            let conv = |vb: &candle_nn::VarBuilder| {
                let vb = vb.pp(&path);
                crate::mirrored::conv2d_for(
                    vb,
                    fan_in,
                    fan_out,
                    kernel,
                    stride,
                    padding,
                    init.bias,
                    init.std(),
                    init.mirror,
                )
            };
            let weight = stack(&|vb| Ok(conv(vb)?.weight().clone()))?;
            let bias = match init.bias {
                true => Some(stack(&|vb| Ok(conv(vb)?.bias().expect("declared with a bias").clone()))?),
                false => None,
            };
            Layer::Conv { weight, bias, stride, padding, groups, centred: init.centred }
        }
        (StepOp::Declared { op: Op::AvgPool2d { kernel, .. }, .. }, _) => Layer::AvgPool(*kernel),
        (StepOp::Declared { op: Op::GlobalAvgPool, .. }, _) => Layer::GlobalAvgPool,
        (StepOp::Declared { op: Op::Flatten, .. }, _) if step.input_shape.dims().len() > 1 => Layer::Flatten,
        (StepOp::Declared { op: Op::Flatten | Op::Dropout { .. }, .. }, _) => Layer::Identity,
        _ => return Err(unsupported()),
    })
}

/// The weight a forward pass multiplies by: `weight` (`[P, ...]`), minus each output's mean over
/// the dimensions `inputs` when `centred`.
fn used_weight(weight: &Var, centred: bool, inputs: &[usize]) -> candle_core::Result<Tensor> {
    let weight = weight.as_tensor();
    if !centred {
        return Ok(weight.clone());
    }
    let mut mean = weight.clone();
    for &dim in inputs.iter().rev() {
        mean = mean.mean_keepdim(dim)?;
    }
    weight.broadcast_sub(&mean)
}

fn describe(step: &Step) -> String {
    step.op_keyword().map_or_else(|| "block".to_string(), str::to_string)
}

/// Plain SGD per copy, `w -= lr_p (grad + weight_decay w)`: candle's `SGD` (plus decoupled-free
/// L2 weight decay) with one learning rate per copy.
#[derive(Debug)]
pub struct EnsembleSgd {
    vars: Vec<Var>,
    learning_rates: Tensor,
    weight_decay: f64,
}

impl EnsembleSgd {
    /// `learning_rates[p]` for copy `p`.
    pub fn new(ensemble: &Ensemble, learning_rates: &[f64], weight_decay: f64) -> Result<Self, EnsembleError> {
        let vars = ensemble.vars();
        let device = ensemble.calibration.device();
        if learning_rates.len() != ensemble.population {
            let expected = format!("one per copy ({})", ensemble.population);
            return Err(EnsembleError::Shape { what: "learning rates", expected, got: vec![learning_rates.len()] });
        }
        let learning_rates = Tensor::new(learning_rates, device)?;
        Ok(EnsembleSgd { vars, learning_rates, weight_decay })
    }

    /// One step on `xs` `[P, B, D]` with integer `labels` `[P, B]`: softmax cross-entropy, mean over
    /// the batch, per copy. Returns each copy's loss before the update.
    pub fn step(&mut self, ensemble: &Ensemble, xs: &Tensor, labels: &Tensor) -> Result<Vec<f64>, EnsembleError> {
        let losses = ensemble.losses(xs, labels)?;
        let grads = losses.sum_all()?.backward()?;
        for var in &self.vars {
            let Some(grad) = grads.get(var.as_tensor()) else { continue };
            let mut shape = vec![var.dim(0)?];
            shape.extend(std::iter::repeat_n(1, var.rank() - 1));
            let lr = self.learning_rates.to_dtype(var.dtype())?.reshape(shape)?;
            let grad = match self.weight_decay {
                0.0 => grad.clone(),
                decay => (grad + (var.as_tensor() * decay)?)?,
            };
            var.set(&var.as_tensor().sub(&grad.broadcast_mul(&lr)?)?)?;
        }
        Ok(losses.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    }
}

//! What the code that [`network!`](crate::network) generates calls. Not part of the API: names
//! and signatures may change in any release.
//!
//! [`ops`] holds one function per stateless layer kind, named by the kind's
//! [`Runtime::Call`](crate::calculus::registry::Runtime) in the calculus's registry and taking
//! the layer's arguments in the order the registry lists them.

pub use crate::calculus;
pub use crate::calculus::Mirror;
pub use crate::init::seeded_var_builder;
pub use crate::mirrored::{mirrored_conv2d, mirrored_linear};
pub use crate::nn::{conv2d, linear, Bias, Conv2d, Scalar};
pub use crate::{Network, Report};
pub use candle_core::{DType, Device, Module, Result, Tensor};
pub use candle_nn::{Init, Linear, ModuleT, VarBuilder, VarMap};

/// One declared layer of a generated `spec()`, rebuilt through the calculus's registry.
pub fn spec_layer(
    name: Option<&str>,
    keyword: &str,
    args: &[Option<calculus::registry::ArgValue>],
    branches: Option<(Vec<calculus::LayerSpec>, Option<Vec<calculus::LayerSpec>>)>,
    allow_unscaled: bool,
) -> calculus::LayerSpec {
    let mut layer = calculus::LayerSpec::new(calculus::registry::rebuild(keyword, args, branches));
    layer.name = name.map(str::to_string);
    layer.allow_unscaled = allow_unscaled;
    layer
}

/// A hook called after every top-level step of a generated forward pass.
pub type StepHook<'a> = &'a mut dyn FnMut(usize, Tensor) -> Result<Tensor>;

/// Runs the optional hook of `forward_hooked` after each step: the one mechanism the generated
/// forward pass uses.
pub struct Hook<'a>(Option<StepHook<'a>>);

impl<'a> Hook<'a> {
    pub fn new(hook: Option<StepHook<'a>>) -> Self {
        Hook(hook)
    }

    /// The output of step `step`, as the hook replaces it. With a hook, the pending fixed
    /// multiplier is applied first, so the hook sees the step's output as the plan defines it;
    /// without one it stays pending.
    pub fn after(&mut self, step: usize, xs: Tensor, pending: &mut f64) -> Result<Tensor> {
        match self.0.as_deref_mut() {
            Some(hook) => hook(step, settle(xs, pending)?),
            None => Ok(xs),
        }
    }
}

/// A fixed scalar step: `xs` unchanged, `factor` added to the pending multiplier.
pub fn defer(xs: Tensor, factor: f64, pending: &mut f64) -> Tensor {
    *pending *= factor;
    xs
}

/// The pending fixed multiplier, handed to a layer that applies it; `pending` starts over at 1.
pub fn take(pending: &mut f64) -> f64 {
    std::mem::replace(pending, 1.0)
}

/// `xs` times the pending fixed multiplier, which is then spent (see `network!`'s forward pass:
/// fixed scalars wait for the next weight layer and are applied here only where they cannot).
pub fn settle(xs: Tensor, pending: &mut f64) -> Result<Tensor> {
    match take(pending) {
        1.0 => Ok(xs),
        factor => xs * factor,
    }
}

/// The network's output: `xs` times the pending multiplier and the calibration scalar, in one
/// pass.
pub fn calibrated(xs: &Tensor, calibration: &Tensor, pending: f64) -> Result<Tensor> {
    let factor = (calibration.detach() * pending)?.to_dtype(xs.dtype())?;
    xs.broadcast_mul(&factor)
}

/// Checks that `xs` is a batch of `[batch, ...expected]` of the network's `dtype`, naming the
/// network in the error.
pub fn check_input(xs: &Tensor, expected: &[usize], dtype: DType, network: &str) -> Result<()> {
    if xs.dtype() != dtype {
        let error = candle_core::Error::UnexpectedDType { msg: "input dtype", expected: dtype, got: xs.dtype() };
        return Err(error.context(format!(
            "{network} was built in {dtype:?} and takes its input in {dtype:?}, not {:?}: convert the batch with \
             `xs.to_dtype(DType::{dtype:?})`",
            xs.dtype()
        )));
    }
    let dims = xs.dims();
    if dims.len() == expected.len() + 1 && dims[1..] == *expected {
        return Ok(());
    }
    let batch = if dims.len() == expected.len() + 1 { dims[0] } else { 1 };
    let mut wanted = vec![batch];
    wanted.extend_from_slice(expected);
    Err(candle_core::Error::UnexpectedShape {
        msg: format!(
            "{network} takes a batch of shape [batch, {}]",
            expected.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
        expected: candle_core::Shape::from(wanted),
        got: xs.shape().clone(),
    }
    .bt())
}

/// Multiplies the `output_calibration` variable in `varmap`, which must be the network's own
/// `calibration` tensor, so that `output` (computed with the current calibration) gets standard
/// deviation `target_std`. Returns the new calibration.
pub fn calibrate(varmap: &VarMap, calibration: &Tensor, output: &Tensor, target_std: f64) -> Result<f64> {
    if !(target_std.is_finite() && target_std > 0.0) {
        candle_core::bail!(
            "calibrate_output needs a positive, finite target std (the paper uses 0.05), got {target_std}"
        )
    }
    let output = output.to_dtype(DType::F64)?;
    let centred = output.broadcast_sub(&output.mean_all()?)?;
    let std = centred.sqr()?.mean_all()?.to_scalar::<f64>()?.sqrt();
    if !(std.is_finite() && std > 0.0) {
        candle_core::bail!("cannot calibrate the output: its standard deviation on this batch is {std}")
    }
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    let Some(var) = vars.get("output_calibration") else {
        candle_core::bail!(
            "this varmap has no `output_calibration` variable; pass the varmap the network was built from"
        )
    };
    if var.as_tensor().id() != calibration.id() {
        candle_core::bail!(
            "this varmap's `output_calibration` is another network's; pass the varmap this network was built from"
        )
    }
    let current = var.as_tensor().to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let calibrated = current * target_std / std;
    var.set(&Tensor::new(calibrated, var.device())?.to_dtype(var.dtype())?)?;
    Ok(calibrated)
}

/// The stateless layer kinds, one function each (see the module documentation).
pub mod ops {
    use candle_core::{Result, Tensor};

    pub use crate::ops::weighted_sum;

    pub fn relu(xs: &Tensor) -> Result<Tensor> {
        crate::ops::relu(xs)
    }

    pub fn leaky_relu(xs: &Tensor, slope: f64) -> Result<Tensor> {
        candle_nn::ops::leaky_relu(xs, slope)
    }

    /// `avg_pool(kernel)`; the calculus only lets `stride == kernel` through.
    pub fn avg_pool(xs: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
        debug_assert_eq!(kernel, stride);
        crate::ops::avg_pool(xs, kernel)
    }

    /// `[B, C, H, W] -> [B, C]`: each channel's mean over the image.
    pub fn global_avg_pool(xs: &Tensor) -> Result<Tensor> {
        crate::ops::global_avg_pool(xs)
    }

    /// Inverted dropout, active only when `train`.
    pub fn dropout(xs: &Tensor, p: f64, train: bool) -> Result<Tensor> {
        if train {
            candle_nn::ops::dropout(xs, p as f32)
        } else {
            Ok(xs.clone())
        }
    }

    pub fn flatten(xs: &Tensor) -> Result<Tensor> {
        xs.flatten_from(1)
    }

    pub fn scale(xs: &Tensor, factor: f64) -> Result<Tensor> {
        xs * factor
    }

    pub fn sigmoid(xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::sigmoid(xs)
    }

    pub fn tanh(xs: &Tensor) -> Result<Tensor> {
        xs.tanh()
    }

    pub fn gelu(xs: &Tensor) -> Result<Tensor> {
        xs.gelu_erf()
    }

    pub fn silu(xs: &Tensor) -> Result<Tensor> {
        xs.silu()
    }

    pub fn elu(xs: &Tensor) -> Result<Tensor> {
        xs.elu(1.0)
    }

    /// `log(1 + exp(x))`, computed as `relu(x) + log(1 + exp(-|x|))` so large inputs do not
    /// overflow.
    pub fn softplus(xs: &Tensor) -> Result<Tensor> {
        let tail = ((xs.abs()?.neg()?.exp()? + 1.0)?).log()?;
        xs.relu()? + tail
    }

    /// Over the features of a vector (dimension 1).
    pub fn softmax(xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax(xs, 1)
    }
}

//! The layers generated networks are made of: a [`Conv2d`] (on [`crate::ops::conv2d`]) and
//! candle-nn's `Linear` created with the calculus's variances, plus the learnable [`Scalar`] and
//! standalone [`Bias`] of the paper.

use candle_core::{Module, Result, Shape, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

/// A 2-d convolution (dilation 1, one group) computed by [`crate::ops::conv2d`], whose backward
/// pass skips the input gradient where none is needed and treats stride = kernel as a matrix
/// product.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, padding: usize, stride: usize) -> Self {
        Conv2d { weight, bias, padding, stride }
    }

    /// `(out, in, k, k)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `(out,)`, where the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Conv2d {
    /// `(batch, in, h, w)` to `(batch, out, (h + 2p - k)/s + 1, (w + 2p - k)/s + 1)`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = crate::ops::conv2d(xs, &self.weight, self.padding, self.stride)?;
        match &self.bias {
            Some(bias) => ys.broadcast_add(&bias.reshape((1, bias.elem_count(), 1, 1))?),
            None => Ok(ys),
        }
    }
}

/// A 2-d convolution with weight `(out, in, k, k)` drawn from `N(0, std^2)` and a zero bias.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    vb: VarBuilder,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
    std: f64,
) -> Result<Conv2d> {
    let weight = vb.get_with_hints(
        (out_channels, in_channels, kernel, kernel),
        "weight",
        Init::Randn { mean: 0.0, stdev: std },
    )?;
    let bias = bias.then(|| vb.get_with_hints(out_channels, "bias", Init::Const(0.0))).transpose()?;
    Ok(Conv2d::new(weight, bias, padding, stride))
}

/// A linear layer with weight `(out, in)` drawn from `N(0, std^2)` and a zero bias.
pub fn linear(vb: VarBuilder, in_features: usize, out_features: usize, bias: bool, std: f64) -> Result<Linear> {
    let weight = vb.get_with_hints((out_features, in_features), "weight", Init::Randn { mean: 0.0, stdev: std })?;
    let bias = bias.then(|| vb.get_with_hints(out_features, "bias", Init::Const(0.0))).transpose()?;
    Ok(Linear::new(weight, bias))
}

/// `y = (u * fixed) x` with one learnable scalar `u` (`<name>.weight`, rank 0).
///
/// The calculus starts `u` at `sqrt(c)` so its weight-to-gradient ratio equals the weights'
/// (Appendix E), and `fixed = 1/sqrt(c)` makes the layer the identity at initialization.
#[derive(Debug, Clone)]
pub struct Scalar {
    weight: Tensor,
    fixed: f64,
}

impl Scalar {
    pub fn new(vb: VarBuilder, value: f64, fixed: f64) -> Result<Self> {
        Ok(Scalar { weight: vb.get_with_hints((), "weight", Init::Const(value))?, fixed })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Scalar {
    /// Any shape to the same shape.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.broadcast_mul(&(&self.weight * self.fixed)?.to_dtype(xs.dtype())?)
    }
}

/// A learnable per-channel bias (`<name>.bias`, shape `[C]`), zero at initialization.
#[derive(Debug, Clone)]
pub struct Bias {
    bias: Tensor,
}

impl Bias {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Bias { bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))? })
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for Bias {
    /// `[B, C, H, W]` or `[B, C]` to the same shape, adding `bias[c]` to channel `c`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let channels = self.bias.dim(0)?;
        match xs.rank() {
            4 => xs.broadcast_add(&self.bias.reshape((1, channels, 1, 1))?),
            _ => xs.broadcast_add(&self.bias),
        }
    }
}

/// `log(1 + exp(x))`, computed as `relu(x) + log(1 + exp(-|x|))` so large inputs do not overflow.
pub fn softplus(xs: &Tensor) -> Result<Tensor> {
    let tail = ((xs.abs()?.neg()?.exp()? + 1.0)?).log()?;
    xs.relu()? + tail
}

/// Checks that `xs` is a batch of `[batch, ...expected]`, naming the network in the error.
pub fn check_input(xs: &Tensor, expected: &[usize], network: &str) -> Result<()> {
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
        expected: Shape::from(wanted),
        got: xs.shape().clone(),
    }
    .bt())
}

/// Multiplies the `output_calibration` variable in `varmap` so that `output` (computed with the
/// current calibration) gets standard deviation `target_std`. Returns the new calibration.
pub fn calibrate(varmap: &candle_nn::VarMap, output: &Tensor, target_std: f64) -> Result<f64> {
    let output = output.to_dtype(candle_core::DType::F64)?;
    let std = crate::diagnostics::second_moment(&output.broadcast_sub(&output.mean_all()?)?)?.sqrt();
    if !(std.is_finite() && std > 0.0) {
        candle_core::bail!("cannot calibrate the output: its standard deviation on this batch is {std}")
    }
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    let Some(var) = vars.get("output_calibration") else {
        candle_core::bail!(
            "this varmap has no `output_calibration` variable; pass the varmap the network was built from"
        )
    };
    let current = var.as_tensor().to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    let calibrated = current * target_std / std;
    var.set(&Tensor::new(calibrated, var.device())?.to_dtype(var.dtype())?)?;
    Ok(calibrated)
}

/// Saves every variable of `varmap` as safetensors at `path`, atomically: a temporary file in the
/// same folder, then a rename, so a failure never leaves a truncated checkpoint in place.
pub fn save_atomically(varmap: &candle_nn::VarMap, path: impl AsRef<std::path::Path>) -> Result<()> {
    let path = path.as_ref();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    varmap.save(&tmp)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| candle_core::Error::Msg(format!("cannot move {} to {}: {e}", tmp.display(), path.display())))
}

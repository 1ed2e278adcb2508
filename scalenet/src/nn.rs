//! The layers generated networks are made of: a [`Conv2d`] (on [`crate::ops::conv2d`]) and
//! candle-nn's `Linear` created with the calculus's variances, plus the learnable [`Scalar`] and
//! standalone [`Bias`] of the paper.

use candle_core::{Module, Result, Tensor};
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
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Self {
        Conv2d { weight, bias, stride, padding }
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
        let ys = crate::ops::conv2d(xs, &self.weight, self.stride, self.padding)?;
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
    Ok(Conv2d::new(weight, bias, stride, padding))
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

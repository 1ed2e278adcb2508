//! The layers generated networks are made of: a [`Conv2d`] and a [`Linear`] (on
//! [`crate::ops`]) created with the calculus's variances, plus the learnable [`Scalar`] and
//! standalone [`Bias`] of the paper.
//!
//! `Conv2d` and `Linear` also take a fixed multiplier of their input ([`Conv2d::forward_scaled`]),
//! which the CPU path folds into the matrix products: generated networks hand them the calculus's
//! fixed scalars that way instead of spending a pass over the activation on each.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// A 2-d convolution (dilation 1) computed by [`crate::ops::conv2d_scaled`]: on the CPU one node
/// of the graph with the bias fused, whose backward pass skips the input gradient where none is
/// needed; with channel groups ([`Conv2d::grouped`]), one such node per group.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
    groups: usize,
    centred: bool,
}

impl Conv2d {
    /// A convolution of `weight` `(out, in, k, k)` with an optional `bias` `(out)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Self {
        Conv2d { weight, bias, stride, padding, groups: 1, centred: false }
    }

    /// The layer in `groups` channel groups: its weight is then `(out, in / groups, k, k)`, and
    /// each group of `out / groups` outputs sees one group of `in / groups` inputs (`groups = in`:
    /// depthwise). See [`crate::ops::grouped_conv2d_scaled`].
    pub fn grouped(self, groups: usize) -> Self {
        Conv2d { groups, ..self }
    }

    /// The number of channel groups (1 unless [`Self::grouped`]).
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// The layer with centred rows: every forward pass uses `W - mean(W)`, the mean over each
    /// output channel's `in x k x k` weights (`centred_weights`), so the layer maps an offset
    /// shared by all of its inputs to zero, and the gradient of `W` has no component along that
    /// mean.
    ///
    /// ```
    /// # use candle_core::{Device, Module, Tensor};
    /// let weight = Tensor::new(&[[[[1f32, 2.], [3., 6.]]]], &Device::Cpu)?;
    /// let layer = scalenet::nn::Conv2d::new(weight, None, 1, 0).centred();
    /// let ys = layer.forward(&Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu)?)?;
    /// assert_eq!(ys.flatten_all()?.to_vec1::<f32>()?, [0.]);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn centred(self) -> Self {
        Conv2d { centred: true, ..self }
    }

    /// The weight the forward pass multiplies by: [`Self::weight`], minus its row means (over each
    /// output's `in / groups x k x k` weights) when
    /// [`Self::centred`].
    pub fn used_weight(&self) -> Result<Tensor> {
        if self.centred {
            let (out, ..) = self.weight.dims4()?;
            let mean = self.weight.reshape((out, ()))?.mean_keepdim(1)?.reshape((out, 1, 1, 1))?;
            self.weight.broadcast_sub(&mean)
        } else {
            Ok(self.weight.clone())
        }
    }

    /// `(out, in / groups, k, k)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `(out,)`, where the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The layer applied to `scale * xs`, the factor folded into the convolution.
    pub fn forward_scaled(&self, xs: &Tensor, scale: f64) -> Result<Tensor> {
        let weight = self.used_weight()?;
        let (bias, stride, padding) = (self.bias.as_ref(), self.stride, self.padding);
        crate::ops::grouped_conv2d_scaled(xs, &weight, bias, stride, padding, self.groups, scale)
    }
}

impl Module for Conv2d {
    /// `(batch, in, h, w)` to `(batch, out, (h + 2p - k)/s + 1, (w + 2p - k)/s + 1)`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_scaled(xs, 1.0)
    }
}

/// A linear layer `xs W^T + b` computed by [`crate::ops::linear_scaled`]: the same parameters
/// and methods as candle-nn's `Linear`, one node of the graph on the CPU, no input gradient where
/// none is needed.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    centred: bool,
}

impl Linear {
    /// A linear layer of `weight` `(out, in)` with an optional `bias` `(out)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias, centred: false }
    }

    /// The layer with centred rows: every forward pass uses `W - mean(W)`, each row's mean over
    /// its inputs (`centred_weights`); see [`Conv2d::centred`].
    pub fn centred(self) -> Self {
        Linear { centred: true, ..self }
    }

    /// The weight the forward pass multiplies by: [`Self::weight`], minus its row means when
    /// [`Self::centred`].
    pub fn used_weight(&self) -> Result<Tensor> {
        if self.centred {
            self.weight.broadcast_sub(&self.weight.mean_keepdim(1)?)
        } else {
            Ok(self.weight.clone())
        }
    }

    /// `(out, in)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `(out,)`, where the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The layer applied to `scale * xs`, the factor folded into the matrix product.
    pub fn forward_scaled(&self, xs: &Tensor, scale: f64) -> Result<Tensor> {
        crate::ops::linear_scaled(xs, &self.used_weight()?, self.bias.as_ref(), scale)
    }
}

impl Module for Linear {
    /// `(.., in)` to `(.., out)`.
    ///
    /// ```
    /// # use candle_core::{Device, Tensor, Module};
    /// let layer = scalenet::nn::Linear::new(Tensor::ones((3, 2), candle_core::DType::F32, &Device::Cpu)?, None);
    /// let ys = layer.forward(&Tensor::new(&[[1f32, 2.]], &Device::Cpu)?)?;
    /// assert_eq!(ys.to_vec2::<f32>()?, [[3., 3., 3.]]);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_scaled(xs, 1.0)
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
    /// The scalar `<vb>.weight`, starting at `value`, multiplied by the fixed `fixed`.
    pub fn new(vb: VarBuilder, value: f64, fixed: f64) -> Result<Self> {
        Ok(Scalar { weight: vb.get_with_hints((), "weight", Init::Const(value))?, fixed })
    }

    /// The learnable scalar, shape `[]`.
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
    /// The bias `<vb>.bias` over `channels`, starting at zero.
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Bias { bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))? })
    }

    /// The bias, shape `[C]`.
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

//! Exact per-sample gradient second moments of a layer's weight and bias, from the layer's input
//! and the gradient at its output.
//!
//! Batch-size-1 semantics ask for `E[dW_b^2]`, the gradient of one sample at a time. The gradient
//! of a batch whose samples have independent backward signals estimates it without bias
//! (`E[|sum_b dW_b|^2] = sum_b E[|dW_b|^2]`), but with much noise: a conv layer's per-sample
//! gradients share a few directions (the input's mean, through every output position), so the
//! cross terms between samples cancel only on average. On the strided LeNet's conv2 that estimate
//! is 0.59-1.30 of the exact value between initializations (interdecile range, 64 inits of 256
//! samples). Here each sample's gradient is formed and squared instead: for a linear layer
//! `|dW_b|^2 = |dy_b|^2 |x_b|^2`; for a convolution `dW_b = dY_b P_b^T` with `P_b` the sample's
//! patches (im2col), one batched matrix product.

use candle_core::{DType, Result, Tensor, D};

/// Patch matrices of at most this many elements are formed at once (the batch is split to fit).
const PATCH_ELEMENTS_PER_CHUNK: usize = 1 << 24;

/// A weight layer's input, prepared to form each sample's weight gradient against one or more
/// gradients at the layer's output (the Gauss-Newton blocks take one per direction): a linear
/// layer keeps `|x_b|^2`, a convolution its patch matrices (im2col), in chunks of samples.
pub struct LayerInput {
    kind: LayerKind,
    batch: usize,
}

enum LayerKind {
    Linear { squared_norms: Tensor, features: usize },
    Conv { chunks: Vec<Tensor>, patch_len: usize, centred: bool, groups: usize },
}

impl LayerInput {
    /// `input` of the weight `step` (a convolution or linear layer).
    ///
    /// Shapes: `(batch, in, h, w)` for a convolution; `(batch, n_in)` or anything that flattens to
    /// it for a linear layer.
    pub fn new(step: &crate::calculus::Step, input: &Tensor) -> Result<Self> {
        use crate::calculus::{Op, StepOp};
        let centred = step.weight().is_some_and(|w| w.centred);
        let layer = match &step.op {
            StepOp::Declared { op: Op::Linear { .. }, .. } => Self::linear(input),
            StepOp::Declared { op: Op::Conv2d { kernel, padding, stride, groups, .. }, .. } => {
                Self::conv2d(input, *kernel, *stride, *padding)?.grouped(*groups)
            }
            _ => candle_core::bail!("`{}` has no weight whose gradient to measure", step.name),
        }?;
        if centred {
            layer.centred(input)
        } else {
            Ok(layer)
        }
    }

    /// The same input for a layer whose rows are centred (`centred_weights`): the weight's
    /// gradient is then each row's gradient minus its mean over the row.
    fn centred(self, input: &Tensor) -> Result<Self> {
        match self.kind {
            LayerKind::Linear { features, .. } => {
                // |P(dy x^T)|^2 = |dy|^2 (|x|^2 - (sum x)^2 / n) for each sample.
                let flat = input.flatten_from(1)?.to_dtype(DType::F64)?;
                let sum = flat.sum(1)?;
                let squared_norms = (flat.sqr()?.sum(1)? - (sum.sqr()? / features as f64)?)?;
                Ok(LayerInput { kind: LayerKind::Linear { squared_norms, features }, batch: self.batch })
            }
            LayerKind::Conv { chunks, patch_len, groups, .. } => {
                Ok(LayerInput { kind: LayerKind::Conv { chunks, patch_len, centred: true, groups }, batch: self.batch })
            }
        }
    }

    /// The same input for a convolution in `groups` channel groups: each output's gradient is then
    /// formed against its group's patches only.
    fn grouped(self, groups: usize) -> Result<Self> {
        match self.kind {
            LayerKind::Conv { chunks, patch_len, centred, .. } => {
                if groups == 0 || !patch_len.is_multiple_of(groups) {
                    candle_core::bail!("per-sample conv gradient: {groups} groups do not divide the input channels")
                }
                Ok(LayerInput { kind: LayerKind::Conv { chunks, patch_len, centred, groups }, batch: self.batch })
            }
            kind => Ok(LayerInput { kind, batch: self.batch }),
        }
    }

    /// The input of a linear layer: `(batch, n_in)` or anything that flattens to it.
    pub fn linear(input: &Tensor) -> Result<Self> {
        let flat = input.flatten_from(1)?.to_dtype(DType::F64)?;
        let kind = LayerKind::Linear { squared_norms: flat.sqr()?.sum(1)?, features: flat.dim(1)? };
        Ok(LayerInput { kind, batch: flat.dim(0)? })
    }

    /// The input `(batch, in, h, w)` of a convolution with a square `kernel`, zero `padding` and
    /// `stride`.
    pub fn conv2d(input: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        let (batch, channels, height, width) = input.dims4()?;
        if height + 2 * padding < kernel || width + 2 * padding < kernel || stride == 0 {
            candle_core::bail!("per-sample conv gradient: kernel {kernel} does not fit input {height}x{width}")
        }
        let (rows, cols) = ((height + 2 * padding - kernel) / stride + 1, (width + 2 * padding - kernel) / stride + 1);
        let patch_len = channels * kernel * kernel;
        let chunk = (PATCH_ELEMENTS_PER_CHUNK / (patch_len * rows * cols).max(1)).clamp(1, batch.max(1));
        let chunks = (0..batch)
            .step_by(chunk)
            .map(|start| {
                let len = chunk.min(batch - start);
                patches(&input.narrow(0, start, len)?, kernel, padding, stride, rows, cols)?
                    .transpose(1, 2)?
                    .contiguous()
            })
            .collect::<Result<_>>()?;
        Ok(LayerInput { kind: LayerKind::Conv { chunks, patch_len, centred: false, groups: 1 }, batch })
    }

    /// `E[dW^2]` over samples and weight entries, for the gradient `output_gradient` at the
    /// layer's output: `(batch, n_out)` for a linear layer, `(batch, out, h_out, w_out)` for a
    /// convolution.
    pub fn weight_gradient_moment(&self, output_gradient: &Tensor) -> Result<f64> {
        let batch = output_gradient.dim(0)?;
        if batch != self.batch {
            candle_core::bail!(
                "per-sample weight gradient: input batch {} but output-gradient batch {batch}",
                self.batch
            )
        }
        match &self.kind {
            LayerKind::Linear { squared_norms, features } => {
                let dy = output_gradient.flatten_from(1)?.to_dtype(DType::F64)?;
                let entries = (features * dy.dim(1)?) as f64;
                Ok((squared_norms * dy.sqr()?.sum(1)?)?.mean_all()?.to_scalar::<f64>()? / entries)
            }
            LayerKind::Conv { chunks, .. } if chunks.is_empty() => Ok(0.0),
            LayerKind::Conv { chunks, patch_len, centred, groups } => {
                let out = output_gradient.dim(1)?;
                let dy = output_gradient.flatten_from(2)?.to_dtype(chunks[0].dtype())?;
                // A group's outputs see its channels' block of each patch (channel-major).
                let (group_out, group_patch) = (out / groups, patch_len / groups);
                let mut total = 0.0;
                let mut start = 0;
                for patches in chunks {
                    let len = patches.dim(0)?;
                    for group in 0..*groups {
                        // (len, out, L) x (len, L, in k^2): each sample's kernel gradient.
                        let dy = dy.narrow(0, start, len)?.narrow(1, group * group_out, group_out)?.contiguous()?;
                        let patches = patches.narrow(2, group * group_patch, group_patch)?.contiguous()?;
                        let mut per_sample = dy.matmul(&patches)?;
                        if *centred {
                            per_sample = per_sample.broadcast_sub(&per_sample.mean_keepdim(2)?)?;
                        }
                        total += per_sample.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
                    }
                    start += len;
                }
                Ok(total / (batch * out * group_patch) as f64)
            }
        }
    }
}

/// `E[dW^2]` over samples and weight entries of the weight of `step` (a convolution or linear
/// layer) from its input and the gradient at its output, one sample at a time.
pub fn per_sample_weight_gradient_moment(
    step: &crate::calculus::Step,
    input: &Tensor,
    output_gradient: &Tensor,
) -> Result<f64> {
    LayerInput::new(step, input)?.weight_gradient_moment(output_gradient)
}

/// The im2col matrix of every sample: `(batch, in k^2, rows cols)`, where column `p` holds the
/// input entries that output position `p` sees (zeros where it overlaps the padding).
fn patches(input: &Tensor, kernel: usize, padding: usize, stride: usize, rows: usize, cols: usize) -> Result<Tensor> {
    let (batch, channels, _, _) = input.dims4()?;
    let padded = input.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding)?;
    let device = input.device();
    let offsets = |tap: usize, count: usize| -> Result<Tensor> {
        let at: Vec<u32> = (0..count).map(|i| (tap + i * stride) as u32).collect();
        Tensor::from_vec(at, count, device)
    };
    let mut taps = Vec::with_capacity(kernel * kernel);
    for tap_row in 0..kernel {
        let band = padded.index_select(&offsets(tap_row, rows)?, 2)?;
        for tap_col in 0..kernel {
            taps.push(band.index_select(&offsets(tap_col, cols)?, 3)?);
        }
    }
    Tensor::stack(&taps, 2)?.reshape((batch, channels * kernel * kernel, rows * cols))
}

/// `E[db^2]` over samples and bias entries of a layer that adds one bias per channel (dim 1): the
/// mean over the batch and channels of `(sum over positions of dy_b)^2`.
pub fn bias_gradient_moment(output_gradient: &Tensor) -> Result<f64> {
    let dy = output_gradient.to_dtype(DType::F64)?;
    let per_channel = match dy.rank() {
        0 | 1 => candle_core::bail!("per-sample bias gradient: expected a batch of outputs, got shape {:?}", dy.dims()),
        2 => dy,
        _ => dy.flatten_from(2)?.sum(D::Minus1)?,
    };
    per_channel.sqr()?.mean_all()?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv2d;
    use candle_core::{Device, Var};

    /// Sample by sample, the kernel gradient of a batch of one, squared and averaged.
    fn one_at_a_time(
        input: &Tensor,
        upstream: &Tensor,
        kernel: &Var,
        padding: usize,
        stride: usize,
    ) -> Result<(f64, f64)> {
        let (mut weight, mut bias) = (0.0, 0.0);
        let batch = input.dim(0)?;
        let bias_var = Var::zeros(kernel.dim(0)?, DType::F64, input.device())?;
        for b in 0..batch {
            let y = conv2d(&input.narrow(0, b, 1)?, kernel.as_tensor(), stride, padding)?
                .broadcast_add(&bias_var.as_tensor().reshape((1, (), 1, 1))?)?;
            let grads = (y * upstream.narrow(0, b, 1)?)?.sum_all()?.backward()?;
            weight += grads.get(kernel.as_tensor()).unwrap().sqr()?.sum_all()?.to_scalar::<f64>()?;
            bias += grads.get(bias_var.as_tensor()).unwrap().sqr()?.sum_all()?.to_scalar::<f64>()?;
        }
        Ok((weight / (batch * kernel.elem_count()) as f64, bias / (batch * kernel.dim(0)?) as f64))
    }

    #[test]
    fn conv_moments_equal_backward_of_one_sample_at_a_time() -> Result<()> {
        let device = Device::Cpu;
        for (channels, out, size, k, padding, stride) in
            [(3, 4, 9, 3, 1, 1), (2, 5, 8, 5, 0, 1), (3, 4, 9, 2, 0, 2), (2, 3, 7, 3, 2, 2)]
        {
            let input = Tensor::randn(0f64, 1., (5, channels, size, size), &device)?;
            let kernel = Var::from_tensor(&Tensor::randn(0f64, 1., (out, channels, k, k), &device)?)?;
            let output = conv2d(&input, kernel.as_tensor(), stride, padding)?;
            let upstream = Tensor::randn(0f64, 1., output.shape(), &device)?;
            let (weight, bias) = one_at_a_time(&input, &upstream, &kernel, padding, stride)?;
            let fast = LayerInput::conv2d(&input, k, stride, padding)?.weight_gradient_moment(&upstream)?;
            assert!((fast - weight).abs() < 1e-10 * weight, "k {k} p {padding} s {stride}: {fast} vs {weight}");
            let fast_bias = bias_gradient_moment(&upstream)?;
            assert!((fast_bias - bias).abs() < 1e-10 * bias, "bias: {fast_bias} vs {bias}");
        }
        Ok(())
    }

    #[test]
    fn linear_moment_equals_backward_of_one_sample_at_a_time() -> Result<()> {
        let device = Device::Cpu;
        let input = Tensor::randn(0f64, 1., (6, 7), &device)?;
        let weight = Var::from_tensor(&Tensor::randn(0f64, 1., (4, 7), &device)?)?;
        let upstream = Tensor::randn(0f64, 1., (6, 4), &device)?;
        let mut expected = 0.0;
        for b in 0..6 {
            let y = input.narrow(0, b, 1)?.matmul(&weight.as_tensor().t()?)?;
            let grads = (y * upstream.narrow(0, b, 1)?)?.sum_all()?.backward()?;
            expected += grads.get(weight.as_tensor()).unwrap().sqr()?.sum_all()?.to_scalar::<f64>()?;
        }
        expected /= (6 * 28) as f64;
        let fast = LayerInput::linear(&input)?.weight_gradient_moment(&upstream)?;
        assert!((fast - expected).abs() < 1e-10 * expected, "{fast} vs {expected}");
        Ok(())
    }
}

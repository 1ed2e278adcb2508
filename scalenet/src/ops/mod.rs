//! Convolution and pooling with faster CPU paths than candle 0.11's.
//!
//! On the CPU, for f32 and f64, the convolution is scalenet's own (the private `cpu` module): the forward pass is
//! im2col and one matrix product per group of images (a few thousand output positions side by
//! side), the backward pass one matrix product per group for each gradient (and a col2im for the
//! input's), with the `gemm` crate candle itself uses, the batch split over rayon's threads. The input gradient is computed only where it is needed (not for
//! the first layer of a network), and a fixed multiplier of the input is folded into the matrix
//! products for free ([`conv2d_scaled`]).
//!
//! For bf16 and f16 on the CPU (mixed precision, [`crate::precision`]), the convolution, the
//! matrix product and the pooling widen their operands to f32, run the f32 path and round the
//! result once, so products accumulate in f32 and every signal between two ops is stored in the
//! half type, as on a GPU with an f32 accumulator.
//!
//! On other devices and dtypes candle's `conv2d` computes the value, and the backward pass avoids
//! two costs of candle's:
//!
//! - candle computes the input gradient (a `conv_transpose2d`, a direct loop on CPU) even when the
//!   input needs none: here it is skipped;
//! - a convolution whose stride equals its kernel covers every input pixel once, so it is a matrix
//!   product over non-overlapping patches: here it is computed that way;
//! - the input gradient of a stride-1 convolution is itself a convolution (of the gradient with the
//!   flipped kernel), which candle computes with im2col and a matrix product.
//!
//! With the `cudnn` feature, f32 and f64 convolutions on a CUDA device run on cuDNN, forward and
//! both gradients, with algorithms measured once per shape and f32 exact unless
//! [`set_allow_tf32`] is on (the module `cudnn`).
//!
//! Values and gradients are those of `Tensor::conv2d` (tests below compare them).

pub(crate) mod cpu;
#[cfg(feature = "cudnn")]
mod cudnn;
mod device;
mod host;

use candle_core::{CustomOp2, CustomOp3, DType, Result, Tensor};
use cpu::ConvGeometry;
use host::on_host;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `xs` is a half-precision tensor on the CPU: the CPU path widens its operands to f32,
/// computes there (products accumulate in f32) and rounds the result once, as a GPU kernel with
/// an f32 accumulator does; gradients flow back through the same conversions, so every signal
/// between two ops is stored in the half type.
fn widened_on_host(xs: &Tensor) -> bool {
    xs.device().is_cpu() && matches!(xs.dtype(), DType::F16 | DType::BF16)
}

/// `f` on the f32 widening of `tensors`, its result rounded back to `like`'s dtype.
fn widened<const N: usize>(
    like: &Tensor,
    tensors: [Option<&Tensor>; N],
    f: impl FnOnce([Option<Tensor>; N]) -> Result<Tensor>,
) -> Result<Tensor> {
    let wide = tensors.map(|t| t.map(|t| t.to_dtype(DType::F32)));
    let mut converted: [Option<Tensor>; N] = std::array::from_fn(|_| None);
    for (slot, tensor) in converted.iter_mut().zip(wide) {
        *slot = tensor.transpose()?;
    }
    f(converted)?.to_dtype(like.dtype())
}

static ALLOW_TF32: AtomicBool = AtomicBool::new(false);

/// Lets f32 products on a CUDA GPU use TF32 tensor cores (products with a 10-bit mantissa: about
/// 1e-3 relative error each, several times faster on Ampere and later GPUs): scalenet's cuDNN
/// convolutions (feature `cudnn`) and candle's cuBLAS matrix products
/// (`candle_core::cuda::set_gemm_reduced_precision_f32`), as PyTorch's
/// `torch.backends.cudnn.allow_tf32` and `torch.backends.cuda.matmul.allow_tf32` together. Off by
/// default, so f32 is exact; applies to the products run after the call. On the CPU it changes
/// nothing.
pub fn set_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, Ordering::Relaxed);
    candle_core::cuda::set_gemm_reduced_precision_f32(allow);
}

/// Whether [`set_allow_tf32`] is on.
pub fn allow_tf32() -> bool {
    ALLOW_TF32.load(Ordering::Relaxed)
}

/// The environment variable that sets how long candle's element-wise worker threads spin after
/// each op before they sleep.
pub const CANDLE_SPIN_LIMIT_VARIABLE: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Makes candle's element-wise worker threads sleep as soon as an op is done, unless the user set
/// [`CANDLE_SPIN_LIMIT_VARIABLE`] already; returns the value in force afterwards.
///
/// candle 0.11 runs every large element-wise op on the CPU (at least 64 K elements: among them
/// the gradient sums of every backward pass) on a thread pool of its own, whose threads then spin
/// 25 000 times, about half a millisecond, before they sleep. scalenet's convolutions and the
/// matrix products run on rayon's pool in between, and on a machine with few cores the spinning
/// threads take cores from them: on 2 cores a training step of the strided LeNet takes 15.8 ms
/// with candle's default and 10.4 ms after this call (`docs/performance.md`). With many idle
/// cores it changes little either way.
///
/// candle reads the variable once, when its pool starts (at the first large element-wise op), so
/// call this first in `main`, before any tensor op and before the program starts other threads
/// (the environment of a running multi-threaded program should not change).
///
/// ```
/// fn main() {
///     let spin_limit = scalenet::ops::park_idle_candle_threads();
///     assert_eq!(std::env::var(scalenet::ops::CANDLE_SPIN_LIMIT_VARIABLE).unwrap(), spin_limit);
///     // ... build and train networks
/// }
/// ```
// The example shows where the call belongs: first in `main`.
#[allow(clippy::needless_doctest_main)]
pub fn park_idle_candle_threads() -> String {
    match std::env::var(CANDLE_SPIN_LIMIT_VARIABLE) {
        Ok(value) => value,
        Err(_) => {
            std::env::set_var(CANDLE_SPIN_LIMIT_VARIABLE, "0");
            "0".to_string()
        }
    }
}

/// `conv2d(xs, kernel)` with `stride` and zero `padding` (dilation 1, one group), as candle's
/// `xs.conv2d(kernel, padding, stride, 1, 1)` (note its order) with the backward pass described in
/// the module.
///
/// Shapes: `xs` is `(batch, in, h, w)`, `kernel` is `(out, in, k, k)`; the result is
/// `(batch, out, (h + 2 padding - k) / stride + 1, (w + 2 padding - k) / stride + 1)`.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// let xs = Tensor::ones((2, 3, 8, 8), candle_core::DType::F32, &Device::Cpu)?;
/// let kernel = Tensor::ones((4, 3, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let ys = scalenet::ops::conv2d(&xs, &kernel, 1, 1)?;
/// assert_eq!(ys.dims(), &[2, 4, 8, 8]);
/// assert_eq!(ys.get(0)?.get(0)?.get(4)?.get(4)?.to_scalar::<f32>()?, 27.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn conv2d(xs: &Tensor, kernel: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_scaled(xs, kernel, None, stride, padding, 1.0)
}

/// `conv2d(scale * xs, kernel) + bias`, which is `scale * conv2d(xs, kernel) + bias`, the bias
/// `(out,)` added to every position of its channel. On the CPU the factor is folded into the
/// matrix products and the bias into the output, so neither costs a pass over an activation.
/// Gradients are those of the expression.
pub fn conv2d_scaled(
    xs: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    scale: f64,
) -> Result<Tensor> {
    let (batch, in_channels, height, width) = xs.dims4()?;
    let (out_channels, kernel_in, k, k_width) = kernel.dims4()?;
    let well_formed = kernel_in == in_channels
        && k == k_width
        && stride > 0
        && height + 2 * padding >= k
        && width + 2 * padding >= k
        && bias.is_none_or(|b| b.dims() == [out_channels]);
    let same_dtype = kernel.dtype() == xs.dtype() && bias.is_none_or(|b| b.dtype() == xs.dtype());
    let geometry = ConvGeometry { batch, in_channels, height, width, out_channels, kernel: k, stride, padding };
    if well_formed && same_dtype && on_host(xs) && kernel.device().is_cpu() {
        return apply_conv(xs, kernel, bias, host::Conv2d { geometry, scale });
    }
    if well_formed && same_dtype && widened_on_host(xs) && kernel.device().is_cpu() {
        return widened(xs, [Some(xs), Some(kernel), bias], |[xs, kernel, bias]| {
            let (xs, kernel) = (xs.expect("given"), kernel.expect("given"));
            conv2d_scaled(&xs, &kernel, bias.as_ref(), stride, padding, scale)
        });
    }
    #[cfg(feature = "cudnn")]
    if well_formed
        && same_dtype
        && xs.device().is_cuda()
        && matches!(xs.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
    {
        return apply_conv(xs, kernel, bias, cudnn::Conv2d { geometry, scale });
    }
    // Elsewhere (and for candle's own error messages on a malformed call) the factor goes on the
    // kernel, which is much smaller than the activation.
    let kernel = if scale == 1.0 { kernel.clone() } else { (kernel * scale)? };
    let ys = if well_formed {
        device::conv2d(xs, &kernel, stride, padding)?
    } else {
        xs.conv2d(&kernel, padding, stride, 1, 1)?
    };
    match bias {
        Some(bias) => ys.broadcast_add(&bias.reshape((1, bias.elem_count(), 1, 1))?),
        None => Ok(ys),
    }
}

/// [`conv2d_scaled`] in `groups` channel groups: `kernel` is `(out, in / groups, k, k)`, and
/// output channels `j out / groups ..` see input channels `j in / groups ..` only (`groups = in`:
/// depthwise). With one group it is `conv2d_scaled` itself; with more, each group is one
/// `conv2d_scaled` over its slice of the channels (so each takes the CPU or cuDNN path as a
/// whole convolution would) and the outputs are concatenated: gradients flow through the slices.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// // Depthwise: each of the 2 channels convolved with its own 1x1 kernel.
/// let xs = Tensor::new(&[[[[1f32, 2.]], [[3., 4.]]]], &Device::Cpu)?;
/// let kernel = Tensor::new(&[[[[10f32]]], [[[100.]]]], &Device::Cpu)?;
/// let ys = scalenet::ops::grouped_conv2d_scaled(&xs, &kernel, None, 1, 0, 2, 1.0)?;
/// assert_eq!(ys.flatten_all()?.to_vec1::<f32>()?, [10., 20., 300., 400.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn grouped_conv2d_scaled(
    xs: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
    scale: f64,
) -> Result<Tensor> {
    if groups == 1 {
        return conv2d_scaled(xs, kernel, bias, stride, padding, scale);
    }
    let (_, in_channels, _, _) = xs.dims4()?;
    let (out_channels, kernel_in, _, _) = kernel.dims4()?;
    if groups == 0 || !in_channels.is_multiple_of(groups) || !out_channels.is_multiple_of(groups) {
        candle_core::bail!(
            "a convolution of {groups} groups needs channel counts that {groups} divides: the input has {in_channels}, the kernel {out_channels} outputs"
        )
    }
    let (per_in, per_out) = (in_channels / groups, out_channels / groups);
    if kernel_in != per_in {
        candle_core::bail!(
            "a convolution of {groups} groups over {in_channels} input channels needs a kernel of {per_in} input channels, not {kernel_in}"
        )
    }
    let outputs = (0..groups)
        .map(|group| {
            let bias = bias.map(|b| b.narrow(0, group * per_out, per_out)).transpose()?;
            conv2d_scaled(
                &xs.narrow(1, group * per_in, per_in)?,
                &kernel.narrow(0, group * per_out, per_out)?,
                bias.as_ref(),
                stride,
                padding,
                scale,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&outputs, 1)
}

/// Applies a convolution op (a [`CustomOp2`] without bias, a [`CustomOp3`] with) to contiguous
/// operands.
fn apply_conv<Op>(xs: &Tensor, kernel: &Tensor, bias: Option<&Tensor>, op: Op) -> Result<Tensor>
where
    Op: CustomOp2 + CustomOp3 + Send + Sync + 'static,
{
    let (xs, kernel) = (xs.contiguous()?, kernel.contiguous()?);
    match bias {
        None => xs.apply_op2(&kernel, op),
        Some(bias) => xs.apply_op3(&kernel, &bias.contiguous()?, op),
    }
}

/// `scale * xs W^T + bias` for `xs` of shape `(rows, inputs)` (or `(.., inputs)`, flattened),
/// `weight` `(outputs, inputs)` and `bias` `(outputs,)`; on the CPU one matrix product each way,
/// the factor folded into it, the input gradient only where needed.
pub fn linear_scaled(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (outputs, inputs) = weight.dims2()?;
    let dims = xs.dims().to_vec();
    let well_formed = dims.last() == Some(&inputs) && bias.is_none_or(|b| b.dims() == [outputs]);
    let same_dtype = weight.dtype() == xs.dtype() && bias.is_none_or(|b| b.dtype() == xs.dtype());
    if well_formed && same_dtype && widened_on_host(xs) && weight.device().is_cpu() {
        return widened(xs, [Some(xs), Some(weight), bias], |[xs, weight, bias]| {
            linear_scaled(&xs.expect("given"), &weight.expect("given"), bias.as_ref(), scale)
        });
    }
    if !(well_formed && same_dtype && on_host(xs) && weight.device().is_cpu()) {
        let weight = if scale == 1.0 { weight.clone() } else { (weight * scale)? };
        let ys = xs.broadcast_matmul(&weight.t()?)?;
        return match bias {
            Some(bias) => ys.broadcast_add(bias),
            None => Ok(ys),
        };
    }
    let rows = xs.elem_count() / inputs.max(1);
    let flat = xs.reshape((rows, inputs))?.contiguous()?;
    let op = host::Linear { rows, inputs, outputs, scale };
    let weight = weight.contiguous()?;
    let ys = match bias {
        None => flat.apply_op2(&weight, op)?,
        Some(bias) => flat.apply_op3(&weight, &bias.contiguous()?, op)?,
    };
    let mut out_dims = dims;
    *out_dims.last_mut().expect("a linear input has a last dimension") = outputs;
    ys.reshape(out_dims)
}

/// `max(xs, 0)`; on the CPU its backward pass is one masked copy of the gradient.
pub fn relu(xs: &Tensor) -> Result<Tensor> {
    if on_host(xs) {
        xs.contiguous()?.apply_op1(host::Relu)
    } else {
        xs.relu()
    }
}

/// `a * xs + b * ys` for tensors of one shape, in one pass on the CPU.
pub fn weighted_sum(xs: &Tensor, a: f64, ys: &Tensor, b: f64) -> Result<Tensor> {
    if on_host(xs) && ys.device().is_cpu() && xs.shape() == ys.shape() && xs.dtype() == ys.dtype() {
        xs.contiguous()?.apply_op2(&ys.contiguous()?, host::WeightedSum { a, b })
    } else {
        (xs * a)? + (ys * b)?
    }
}

/// Average pooling of `(batch, channels, h, w)` by non-overlapping `kernel x kernel` windows
/// (stride = kernel) to `(batch, channels, h / kernel, w / kernel)`: rows and columns beyond the
/// last whole window are not seen, and get a zero gradient (candle's own op errs or miscounts
/// there). One pass each way on the CPU.
pub fn avg_pool(xs: &Tensor, kernel: usize) -> Result<Tensor> {
    let (batch, channels, height, width) = xs.dims4()?;
    if kernel == 0 || kernel > height || kernel > width {
        return xs.avg_pool2d(kernel);
    }
    if on_host(xs) {
        let op = host::AvgPool { planes: batch * channels, height, width, kernel };
        return xs.contiguous()?.apply_op1(op);
    }
    if widened_on_host(xs) {
        return widened(xs, [Some(xs)], |[xs]| avg_pool(&xs.expect("given"), kernel));
    }
    let (rows, cols) = (height / kernel * kernel, width / kernel * kernel);
    let seen = if rows != height || cols != width { xs.narrow(2, 0, rows)?.narrow(3, 0, cols)? } else { xs.clone() };
    seen.avg_pool2d(kernel)
}

/// Each channel's mean over the image, `(batch, channels, h, w) -> (batch, channels)`; on the CPU
/// the one-pass average pooling above with a window of the whole image (when it is square).
pub fn global_avg_pool(xs: &Tensor) -> Result<Tensor> {
    let (_, _, height, width) = xs.dims4()?;
    if (on_host(xs) || widened_on_host(xs)) && height == width && height > 0 {
        avg_pool(xs, height)?.flatten_from(1)
    } else {
        xs.flatten_from(2)?.mean(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Largest absolute difference over the largest absolute value of `expected`.
    fn relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
        let diff = (actual - expected).unwrap().abs().unwrap().max_all().unwrap();
        let scale = expected.abs().unwrap().max_all().unwrap();
        let (diff, scale) = (diff.to_dtype(DType::F64).unwrap(), scale.to_dtype(DType::F64).unwrap());
        let (diff, scale) = (diff.to_scalar::<f64>().unwrap(), scale.to_scalar::<f64>().unwrap());
        // An all-zero expectation (a ReLU of negative inputs) asks for an exact match.
        if scale == 0.0 {
            diff
        } else {
            diff / scale
        }
    }

    /// Values and both gradients of `conv2d_scaled` match candle's `conv2d` of the scaled input,
    /// in f64 and f32, over stride 1 with and without padding, stride = kernel (with sizes that are
    /// not a multiple of the kernel), a strided kernel that overlaps, 1x1 kernels, odd and
    /// non-square images, batch 1 and batches that do not divide over the threads, and an input
    /// that needs no gradient.
    #[test]
    fn matches_candle_conv2d() -> Result<()> {
        let device = Device::Cpu;
        #[rustfmt::skip]
        let cases = [
            // (batch, channels, out, height, width, k, padding, stride, input_grad, scale)
            (2, 3, 4, 9, 9, 3, 1, 1, true, 1.0),
            (2, 2, 5, 8, 8, 5, 0, 1, true, 0.7),
            (3, 3, 4, 9, 7, 2, 0, 2, true, 1.0),
            (2, 2, 3, 8, 8, 3, 2, 1, false, 1.3),
            (1, 3, 6, 11, 10, 5, 2, 1, true, 0.5),
            (5, 4, 3, 7, 7, 3, 0, 2, true, 2.0),
            (3, 5, 7, 6, 5, 1, 0, 1, true, 1.1),
            (7, 2, 3, 5, 6, 1, 1, 1, true, 1.0),
            (1, 1, 1, 4, 4, 4, 0, 4, true, 0.9),
            // "same" padding: the im2col and col2im of whole shifted planes
            (1, 2, 3, 6, 9, 5, 2, 1, true, 0.8),
            (2, 3, 2, 3, 3, 3, 1, 1, true, 1.0),
        ];
        for dtype in [DType::F64, DType::F32] {
            let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            for (batch, channels, out, height, width, k, padding, stride, input_grad, scale) in cases {
                let xs = Var::from_tensor(
                    &Tensor::randn(0f64, 1., (batch, channels, height, width), &device)?.to_dtype(dtype)?,
                )?;
                let kernel =
                    Var::from_tensor(&Tensor::randn(0f64, 1., (out, channels, k, k), &device)?.to_dtype(dtype)?)?;
                let input = if input_grad { xs.as_tensor().clone() } else { xs.as_tensor().detach() };
                let bias = Var::from_tensor(&Tensor::randn(0f64, 1., out, &device)?.to_dtype(dtype)?)?;
                let with_bias = batch % 2 == 1;
                let mut expected = (&input * scale)?.conv2d(kernel.as_tensor(), padding, stride, 1, 1)?;
                if with_bias {
                    expected = expected.broadcast_add(&bias.as_tensor().reshape((1, out, 1, 1))?)?;
                }
                let bias_arg = with_bias.then_some(bias.as_tensor());
                let actual = conv2d_scaled(&input, kernel.as_tensor(), bias_arg, stride, padding, scale)?;
                assert_eq!(actual.dims(), expected.dims());
                assert!(relative_error(&actual, &expected) < tolerance);
                let upstream = Tensor::randn(0f64, 1., expected.shape(), &device)?.to_dtype(dtype)?;
                let expected_grads = (&expected * &upstream)?.sum_all()?.backward()?;
                let actual_grads = (&actual * &upstream)?.sum_all()?.backward()?;
                let kernel_grad = actual_grads.get(kernel.as_tensor()).expect("kernel gradient");
                assert!(relative_error(kernel_grad, expected_grads.get(kernel.as_tensor()).unwrap()) < tolerance);
                match actual_grads.get(xs.as_tensor()) {
                    Some(g) => assert!(relative_error(g, expected_grads.get(xs.as_tensor()).unwrap()) < tolerance),
                    None => assert!(!input_grad, "the input gradient is missing"),
                }
                if with_bias {
                    let bias_grad = actual_grads.get(bias.as_tensor()).expect("bias gradient");
                    assert!(relative_error(bias_grad, expected_grads.get(bias.as_tensor()).unwrap()) < tolerance);
                }
            }
        }
        Ok(())
    }

    /// Compares `actual(inputs)` with `expected(inputs)`, values and the gradients of every input
    /// under a random upstream gradient, in f64 and f32.
    fn check_against(
        shapes: &[&[usize]],
        actual: impl Fn(&[Tensor]) -> Result<Tensor>,
        expected: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) -> Result<()> {
        for dtype in [DType::F64, DType::F32] {
            let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            let vars = shapes
                .iter()
                .map(|shape| Var::from_tensor(&Tensor::randn(0f64, 1., *shape, &Device::Cpu)?.to_dtype(dtype)?))
                .collect::<Result<Vec<_>>>()?;
            let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let (ys, want) = (actual(&inputs)?, expected(&inputs)?);
            assert_eq!(ys.dims(), want.dims());
            assert!(relative_error(&ys, &want) < tolerance);
            let upstream = Tensor::randn(0f64, 1., want.shape(), &Device::Cpu)?.to_dtype(dtype)?;
            let grads = (&ys * &upstream)?.sum_all()?.backward()?;
            let want_grads = (&want * &upstream)?.sum_all()?.backward()?;
            for input in &inputs {
                let (got, wanted) = (grads.get(input).expect("a gradient"), want_grads.get(input).unwrap());
                assert!(relative_error(got, wanted) < tolerance);
            }
        }
        Ok(())
    }

    #[test]
    fn linear_matches_candle() -> Result<()> {
        for (rows, inputs, outputs, scale) in [(5, 7, 3, 1.0), (1, 4, 6, 0.3), (33, 16, 9, 2.0)] {
            check_against(
                &[&[rows, inputs], &[outputs, inputs], &[outputs]],
                |t| linear_scaled(&t[0], &t[1], Some(&t[2]), scale),
                |t| ((&t[0] * scale)?.matmul(&t[1].t()?)?).broadcast_add(&t[2]),
            )?;
            check_against(
                &[&[2, rows, inputs], &[outputs, inputs]],
                |t| linear_scaled(&t[0], &t[1], None, scale),
                |t| (&t[0] * scale)?.broadcast_matmul(&t[1].t()?),
            )?;
        }
        Ok(())
    }

    #[test]
    fn relu_and_weighted_sum_match_candle() -> Result<()> {
        for shape in [&[3usize, 4, 5, 6][..], &[70_000], &[1]] {
            check_against(&[shape], |t| relu(&t[0]), |t| t[0].relu())?;
            check_against(
                &[shape, shape],
                |t| weighted_sum(&t[0], 0.3, &t[1], -1.7),
                |t| (&t[0] * 0.3)? + (&t[1] * -1.7)?,
            )?;
        }
        Ok(())
    }

    /// Pooling matches candle's where candle is right (sizes divisible by the kernel), and the
    /// average of the seen window with a zero gradient on the unseen border elsewhere.
    #[test]
    fn avg_pool_matches_candle() -> Result<()> {
        for (shape, k) in [([2, 3, 8, 8], 2), ([1, 2, 12, 6], 3), ([4, 40, 16, 16], 4), ([2, 1, 4, 4], 4)] {
            check_against(&[&shape], |t| avg_pool(&t[0], k), |t| t[0].avg_pool2d(k))?;
        }
        for shape in [[2, 3, 8, 8], [3, 2, 5, 7], [1, 1, 1, 1]] {
            check_against(&[&shape], |t| global_avg_pool(&t[0]), |t| t[0].flatten_from(2)?.mean(2))?;
        }
        for (shape, k) in [([2, 3, 9, 7], 2), ([1, 2, 5, 8], 3)] {
            let (h, w) = (shape[2] / k * k, shape[3] / k * k);
            check_against(
                &[&shape],
                |t| avg_pool(&t[0], k),
                |t| t[0].narrow(2, 0, h)?.narrow(3, 0, w)?.contiguous()?.avg_pool2d(k),
            )?;
        }
        Ok(())
    }
}

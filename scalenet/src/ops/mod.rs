//! Convolution and pooling with faster CPU paths than candle 0.11's.
//!
//! On the CPU, for f32 and f64, the convolution is scalenet's own ([`cpu`]): the forward pass is
//! im2col and one matrix product per image, the backward pass one matrix product per image for each
//! gradient (and a col2im for the input's), with the `gemm` crate candle itself uses, split over
//! the batch on rayon's threads. The input gradient is computed only where it is needed (not for
//! the first layer of a network), and a fixed multiplier of the input is folded into the matrix
//! products for free ([`conv2d_scaled`]).
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
//! Values and gradients are those of `Tensor::conv2d` (tests below compare them).

mod cpu;

use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use cpu::{ConvGeometry, Real};

/// `conv2d(xs, kernel)` with `stride` and zero `padding` (dilation 1, one group), as candle's
/// `xs.conv2d(kernel, padding, stride, 1, 1)` (note its order) with the backward pass described in
/// the module.
///
/// Shapes: `xs` is `(batch, in, h, w)`, `kernel` is `(out, in, k, k)`; the result is
/// `(batch, out, (h + 2 padding - k) / stride + 1, (w + 2 padding - k) / stride + 1)`.
pub fn conv2d(xs: &Tensor, kernel: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_scaled(xs, kernel, stride, padding, 1.0)
}

/// `conv2d(scale * xs, kernel)`, which is `scale * conv2d(xs, kernel)`: on the CPU the factor is
/// folded into the matrix products, so a fixed multiplier costs no pass over the activation.
/// Gradients are those of the scaled expression.
pub fn conv2d_scaled(xs: &Tensor, kernel: &Tensor, stride: usize, padding: usize, scale: f64) -> Result<Tensor> {
    let (batch, in_channels, height, width) = xs.dims4()?;
    let (out_channels, kernel_in, k, k_width) = kernel.dims4()?;
    if kernel_in != in_channels || k != k_width || stride == 0 || height + 2 * padding < k || width + 2 * padding < k {
        // candle's own checks word the error.
        return (xs * scale)?.conv2d(kernel, padding, stride, 1, 1);
    }
    let host = matches!(xs.device(), Device::Cpu) && matches!(xs.dtype(), DType::F32 | DType::F64);
    if host && kernel.dtype() == xs.dtype() {
        let geometry = ConvGeometry { batch, in_channels, height, width, out_channels, kernel: k, stride, padding };
        return xs.contiguous()?.apply_op2(&kernel.contiguous()?, HostConv2d { geometry, scale });
    }
    let kernel = if scale == 1.0 { kernel.clone() } else { (kernel * scale)? };
    if stride == k && padding == 0 {
        return patch_conv2d(xs, &kernel);
    }
    let value = xs.detach().conv2d(&kernel.detach(), padding, stride, 1, 1)?;
    if !xs.track_op() && !kernel.track_op() {
        return Ok(value);
    }
    xs.apply_op2(&kernel, Conv2dGrad { value, padding, stride })
}

/// The slice of a contiguous CPU tensor's elements.
fn with_host_slice<T: Real + candle_core::WithDType, R>(tensor: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => {
            let elements = &cpu.as_slice::<T>()?[layout.start_offset()..][..layout.shape().elem_count()];
            Ok(f(elements))
        }
        _ => candle_core::bail!("scalenet-conv2d: a tensor is not on the cpu"),
    }
}

/// The graph node of [`conv2d_scaled`] on the CPU (f32, f64): both passes by [`cpu`]'s kernels.
struct HostConv2d {
    geometry: ConvGeometry,
    scale: f64,
}

impl HostConv2d {
    fn output_shape(&self) -> Shape {
        let g = &self.geometry;
        Shape::from((g.batch, g.out_channels, g.out_height(), g.out_width()))
    }

    fn backward<T: Real + candle_core::WithDType>(
        &self,
        xs: &Tensor,
        kernel: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let input_gradient = xs.track_op();
        let (grad_xs, grad_kernel) = with_host_slice::<T, _>(xs, |xs| {
            with_host_slice::<T, _>(kernel, |kernel| {
                with_host_slice::<T, _>(grad, |grad| {
                    cpu::conv2d_backward(
                        &self.geometry,
                        xs,
                        kernel,
                        grad,
                        <T as Real>::from_f64(self.scale),
                        input_gradient,
                    )
                })
            })
        })???;
        let grad_xs = grad_xs.map(|g| Tensor::from_vec(g, xs.shape(), xs.device())).transpose()?;
        let grad_kernel = kernel.track_op().then(|| Tensor::from_vec(grad_kernel, kernel.shape(), kernel.device()));
        Ok((grad_xs, grad_kernel.transpose()?))
    }
}

impl CustomOp2 for HostConv2d {
    fn name(&self) -> &'static str {
        "scalenet-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        kernel: &CpuStorage,
        kernel_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Real + candle_core::WithDType>(
            op: &HostConv2d,
            xs: &[T],
            xs_layout: &Layout,
            kernel: &[T],
            kernel_layout: &Layout,
        ) -> Vec<T> {
            let xs = &xs[xs_layout.start_offset()..][..xs_layout.shape().elem_count()];
            let kernel = &kernel[kernel_layout.start_offset()..][..kernel_layout.shape().elem_count()];
            cpu::conv2d_forward(&op.geometry, xs, kernel, <T as Real>::from_f64(op.scale))
        }
        if !xs_layout.is_contiguous() || !kernel_layout.is_contiguous() {
            candle_core::bail!("scalenet-conv2d: operands must be contiguous");
        }
        let storage = match (xs, kernel) {
            (CpuStorage::F32(xs), CpuStorage::F32(kernel)) => {
                CpuStorage::F32(run(self, xs, xs_layout, kernel, kernel_layout))
            }
            (CpuStorage::F64(xs), CpuStorage::F64(kernel)) => {
                CpuStorage::F64(run(self, xs, xs_layout, kernel, kernel_layout))
            }
            _ => candle_core::bail!("scalenet-conv2d: f32 or f64 operands of one dtype expected"),
        };
        Ok((storage, self.output_shape()))
    }

    fn bwd(&self, xs: &Tensor, kernel: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        match xs.dtype() {
            DType::F32 => self.backward::<f32>(xs, kernel, grad),
            DType::F64 => self.backward::<f64>(xs, kernel, grad),
            dtype => candle_core::bail!("scalenet-conv2d: no backward pass for {dtype:?}"),
        }
    }
}

/// A convolution whose stride equals its kernel, as a matrix product over the non-overlapping
/// `k x k` patches (pixels beyond the last whole patch are not seen, as in `conv2d`).
fn patch_conv2d(xs: &Tensor, kernel: &Tensor) -> Result<Tensor> {
    let (batch, channels, height, width) = xs.dims4()?;
    let (out, _, k, _) = kernel.dims4()?;
    let (rows, cols) = (height / k, width / k);
    let xs = if rows * k != height || cols * k != width {
        xs.narrow(2, 0, rows * k)?.narrow(3, 0, cols * k)?
    } else {
        xs.clone()
    };
    let patches = xs
        .reshape((batch, channels, rows, k, cols, k))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((batch * rows * cols, channels * k * k))?;
    let ys = patches.matmul(&kernel.reshape((out, channels * k * k))?.t()?)?;
    ys.reshape((batch, rows, cols, out))?.permute((0, 3, 1, 2))?.contiguous()
}

/// The graph node of [`conv2d`]: its value is computed beforehand by candle's `conv2d` (held in
/// `value`), its backward pass computes only the gradients that are needed.
struct Conv2dGrad {
    value: Tensor,
    padding: usize,
    stride: usize,
}

impl CustomOp2 for Conv2dGrad {
    fn name(&self) -> &'static str {
        "scalenet-conv2d"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (storage, layout) = self.value.storage_and_layout();
        match &*storage {
            candle_core::Storage::Cpu(cpu) => Ok((cpu.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("scalenet-conv2d: the value is not on the cpu"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (storage, layout) = self.value.storage_and_layout();
        match &*storage {
            candle_core::Storage::Cuda(cuda) => Ok((cuda.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("scalenet-conv2d: the value is not on the cuda device"),
        }
    }

    #[cfg(feature = "metal")]
    fn metal_fwd(
        &self,
        _: &candle_core::MetalStorage,
        _: &Layout,
        _: &candle_core::MetalStorage,
        _: &Layout,
    ) -> Result<(candle_core::MetalStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (storage, layout) = self.value.storage_and_layout();
        match &*storage {
            candle_core::Storage::Metal(metal) => Ok((metal.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("scalenet-conv2d: the value is not on the metal device"),
        }
    }

    fn bwd(&self, xs: &Tensor, kernel: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (padding, stride) = (self.padding, self.stride);
        let grad_xs = if xs.track_op() {
            let k = kernel.dim(2)?;
            if stride == 1 && padding < k {
                Some(stride_one_input_gradient(grad, kernel, padding)?)
            } else {
                let out_size = (grad.dim(2)? - 1) * stride + k - 2 * padding;
                let out_padding = xs.dim(2)? - out_size;
                Some(grad.conv_transpose2d(kernel, padding, out_padding, stride, 1)?)
            }
        } else {
            None
        };
        let grad_kernel = if kernel.track_op() {
            let (_, _, k0, k1) = kernel.dims4()?;
            let full = xs.transpose(0, 1)?.conv2d(&grad.transpose(0, 1)?, padding, 1, stride, 1)?.transpose(0, 1)?;
            let (_, _, g0, g1) = full.dims4()?;
            Some(if g0 != k0 || g1 != k1 { full.narrow(2, 0, k0)?.narrow(3, 0, k1)? } else { full })
        } else {
            None
        };
        Ok((grad_xs, grad_kernel))
    }
}

/// The input gradient of a stride-1 convolution with `padding < k`: the transposed convolution
/// is the convolution of the gradient, padded by `k - 1 - padding`, with the kernel flipped in
/// space and its input and output channels swapped. candle runs that through im2col and one matrix
/// product, where its `conv_transpose2d` is a direct loop on the CPU.
fn stride_one_input_gradient(grad: &Tensor, kernel: &Tensor, padding: usize) -> Result<Tensor> {
    let k = kernel.dim(2)?;
    let reversed = Tensor::new((0..k as u32).rev().collect::<Vec<u32>>(), kernel.device())?;
    let flipped = kernel.index_select(&reversed, 2)?.index_select(&reversed, 3)?.transpose(0, 1)?.contiguous()?;
    grad.conv2d(&flipped, k - 1 - padding, 1, 1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Largest absolute difference over the largest absolute value of `expected`.
    fn relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
        let diff = (actual - expected).unwrap().abs().unwrap().max_all().unwrap();
        let scale = expected.abs().unwrap().max_all().unwrap();
        let (diff, scale) = (diff.to_dtype(DType::F64).unwrap(), scale.to_dtype(DType::F64).unwrap());
        let (diff, scale) = (diff.to_scalar::<f64>().unwrap(), scale.to_scalar::<f64>().unwrap());
        diff / scale
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
                let expected = (&input * scale)?.conv2d(kernel.as_tensor(), padding, stride, 1, 1)?;
                let actual = conv2d_scaled(&input, kernel.as_tensor(), stride, padding, scale)?;
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
            }
        }
        Ok(())
    }
}

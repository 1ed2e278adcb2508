//! The convolution on devices other than the CPU (and dtypes other than f32 and f64): candle's
//! `conv2d` computes the value; the backward pass computes only the gradients that are needed.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// `conv2d(xs, kernel)` by candle's op, with the backward pass of [`Conv2dGrad`], or as a matrix
/// product over patches when the stride equals the kernel.
pub(super) fn conv2d(xs: &Tensor, kernel: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let k = kernel.dim(2)?;
    if stride == k && padding == 0 {
        return patch_conv2d(xs, kernel);
    }
    let value = xs.detach().conv2d(&kernel.detach(), padding, stride, 1, 1)?;
    if !xs.track_op() && !kernel.track_op() {
        return Ok(value);
    }
    xs.apply_op2(kernel, Conv2dGrad { value, padding, stride })
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

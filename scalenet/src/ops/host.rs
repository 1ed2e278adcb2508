//! The graph nodes of the CPU path (f32 and f64): each forward pass runs one of [`super::cpu`]'s
//! kernels on the operands' storage, each backward pass the matching gradient kernel, so an op is
//! one node of candle's graph however many products it fuses.

use super::cpu::{self, ConvGeometry, Real};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, WithDType,
};

/// Whether `xs` runs on the CPU path: a CPU tensor of f32 or f64.
pub(super) fn on_host(xs: &Tensor) -> bool {
    xs.device().is_cpu() && matches!(xs.dtype(), DType::F32 | DType::F64)
}

/// Calls `f` with the elements of each tensor (made contiguous first).
fn with_slices<T: Real + WithDType, R, const N: usize>(
    tensors: [&Tensor; N],
    f: impl FnOnce([&[T]; N]) -> R,
) -> Result<R> {
    let owned = tensors.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(N);
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cpu(cpu) => {
                slices.push(&cpu.as_slice::<T>()?[layout.start_offset()..][..layout.shape().elem_count()])
            }
            _ => candle_core::bail!("scalenet: a tensor of a cpu op is not on the cpu"),
        }
    }
    let slices: [&[T]; N] = slices.try_into().unwrap_or_else(|_| unreachable!("one slice per tensor"));
    Ok(f(slices))
}

/// The elements of a contiguous operand as the kernels see them.
fn elements<'a, T>(values: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    if !layout.is_contiguous() {
        candle_core::bail!("scalenet: cpu ops take contiguous operands");
    }
    Ok(&values[layout.start_offset()..][..layout.shape().elem_count()])
}

/// Runs `$run::<T>` on the matching f32 or f64 slices of the operands and wraps the result.
macro_rules! dispatch {
    ($name:expr, $run:ident, $($storage:ident : $layout:ident),+) => {
        match ($($storage,)+) {
            ($(CpuStorage::F32($storage),)+) => CpuStorage::F32($run::<f32>($(elements($storage, $layout)?),+)),
            ($(CpuStorage::F64($storage),)+) => CpuStorage::F64($run::<f64>($(elements($storage, $layout)?),+)),
            _ => candle_core::bail!("{}: f32 or f64 operands of one dtype expected", $name),
        }
    };
}

fn tensor<T: WithDType>(values: Vec<T>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(values, like.shape(), like.device())
}

/// `scale * conv2d(xs, kernel) (+ bias)`: a [`CustomOp2`] without bias, a [`CustomOp3`] with.
pub(super) struct Conv2d {
    pub geometry: ConvGeometry,
    pub scale: f64,
}

impl Conv2d {
    fn forward(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        kernel: &CpuStorage,
        kernel_layout: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, scale) = (&self.geometry, self.scale);
        let storage = match bias {
            None => match (xs, kernel) {
                (CpuStorage::F32(xs), CpuStorage::F32(kernel)) => CpuStorage::F32(cpu::conv2d_forward(
                    g,
                    elements(xs, xs_layout)?,
                    elements(kernel, kernel_layout)?,
                    None,
                    scale as f32,
                )),
                (CpuStorage::F64(xs), CpuStorage::F64(kernel)) => CpuStorage::F64(cpu::conv2d_forward(
                    g,
                    elements(xs, xs_layout)?,
                    elements(kernel, kernel_layout)?,
                    None,
                    scale,
                )),
                _ => candle_core::bail!("scalenet-conv2d: f32 or f64 operands of one dtype expected"),
            },
            Some((bias, bias_layout)) => match (xs, kernel, bias) {
                (CpuStorage::F32(xs), CpuStorage::F32(kernel), CpuStorage::F32(bias)) => {
                    CpuStorage::F32(cpu::conv2d_forward(
                        g,
                        elements(xs, xs_layout)?,
                        elements(kernel, kernel_layout)?,
                        Some(elements(bias, bias_layout)?),
                        scale as f32,
                    ))
                }
                (CpuStorage::F64(xs), CpuStorage::F64(kernel), CpuStorage::F64(bias)) => {
                    CpuStorage::F64(cpu::conv2d_forward(
                        g,
                        elements(xs, xs_layout)?,
                        elements(kernel, kernel_layout)?,
                        Some(elements(bias, bias_layout)?),
                        scale,
                    ))
                }
                _ => candle_core::bail!("scalenet-conv2d: f32 or f64 operands of one dtype expected"),
            },
        };
        Ok((storage, Shape::from(self.geometry.output_dims())))
    }

    fn backward_as<T: Real + WithDType>(
        &self,
        xs: &Tensor,
        kernel: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        let input_gradient = xs.track_op();
        let scale = <T as Real>::from_f64(self.scale);
        let (grad_xs, grad_kernel, grad_bias) = with_slices::<T, _, 3>([xs, kernel, grad], |[xs, kernel, grad]| {
            cpu::conv2d_backward(&self.geometry, xs, kernel, grad, scale, input_gradient)
        })?;
        let grad_xs = grad_xs.map(|g| tensor(g, xs)).transpose()?;
        let grad_bias = Tensor::from_vec(grad_bias, self.geometry.out_channels, xs.device())?;
        Ok((grad_xs, tensor(grad_kernel, kernel)?, grad_bias))
    }

    fn backward(&self, xs: &Tensor, kernel: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        match xs.dtype() {
            DType::F32 => self.backward_as::<f32>(xs, kernel, grad),
            DType::F64 => self.backward_as::<f64>(xs, kernel, grad),
            dtype => candle_core::bail!("scalenet-conv2d: no cpu backward pass for {dtype:?}"),
        }
    }
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "scalenet-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_l: &Layout,
        kernel: &CpuStorage,
        kernel_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(xs, xs_l, kernel, kernel_l, None)
    }

    fn bwd(&self, xs: &Tensor, kernel: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (grad_xs, grad_kernel, _) = self.backward(xs, kernel, grad)?;
        Ok((grad_xs, kernel.track_op().then_some(grad_kernel)))
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "scalenet-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_l: &Layout,
        kernel: &CpuStorage,
        kernel_l: &Layout,
        bias: &CpuStorage,
        bias_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(xs, xs_l, kernel, kernel_l, Some((bias, bias_l)))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        kernel: &Tensor,
        bias: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_xs, grad_kernel, grad_bias) = self.backward(xs, kernel, grad)?;
        Ok((grad_xs, kernel.track_op().then_some(grad_kernel), bias.track_op().then_some(grad_bias)))
    }
}

/// `scale * xs W^T (+ bias)` on `(rows, inputs)` inputs: a [`CustomOp2`] without bias, a
/// [`CustomOp3`] with.
pub(super) struct Linear {
    pub rows: usize,
    pub inputs: usize,
    pub outputs: usize,
    pub scale: f64,
}

impl Linear {
    fn forward(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, inputs, outputs) = (self.rows, self.inputs, self.outputs);
        let storage = match (xs, weight, bias) {
            (CpuStorage::F32(xs), CpuStorage::F32(weight), None) => CpuStorage::F32(cpu::linear_forward(
                elements(xs, xs_layout)?,
                elements(weight, weight_layout)?,
                None,
                rows,
                inputs,
                outputs,
                self.scale as f32,
            )),
            (CpuStorage::F32(xs), CpuStorage::F32(weight), Some((CpuStorage::F32(bias), bias_layout))) => {
                CpuStorage::F32(cpu::linear_forward(
                    elements(xs, xs_layout)?,
                    elements(weight, weight_layout)?,
                    Some(elements(bias, bias_layout)?),
                    rows,
                    inputs,
                    outputs,
                    self.scale as f32,
                ))
            }
            (CpuStorage::F64(xs), CpuStorage::F64(weight), None) => CpuStorage::F64(cpu::linear_forward(
                elements(xs, xs_layout)?,
                elements(weight, weight_layout)?,
                None,
                rows,
                inputs,
                outputs,
                self.scale,
            )),
            (CpuStorage::F64(xs), CpuStorage::F64(weight), Some((CpuStorage::F64(bias), bias_layout))) => {
                CpuStorage::F64(cpu::linear_forward(
                    elements(xs, xs_layout)?,
                    elements(weight, weight_layout)?,
                    Some(elements(bias, bias_layout)?),
                    rows,
                    inputs,
                    outputs,
                    self.scale,
                ))
            }
            _ => candle_core::bail!("scalenet-linear: f32 or f64 operands of one dtype expected"),
        };
        Ok((storage, Shape::from((rows, outputs))))
    }

    fn backward_as<T: Real + WithDType>(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        grad: &Tensor,
        bias: bool,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let input_gradient = xs.track_op();
        let scale = <T as Real>::from_f64(self.scale);
        let (rows, inputs, outputs) = (self.rows, self.inputs, self.outputs);
        let (grad_xs, grad_weight, grad_bias) = with_slices::<T, _, 3>([xs, weight, grad], |[xs, weight, grad]| {
            cpu::linear_backward(xs, weight, grad, rows, inputs, outputs, scale, input_gradient, bias)
        })?;
        let grad_xs = grad_xs.map(|g| tensor(g, xs)).transpose()?;
        let grad_bias = grad_bias.map(|g| Tensor::from_vec(g, outputs, xs.device())).transpose()?;
        Ok((grad_xs, tensor(grad_weight, weight)?, grad_bias))
    }

    fn backward(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        grad: &Tensor,
        bias: bool,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        match xs.dtype() {
            DType::F32 => self.backward_as::<f32>(xs, weight, grad, bias),
            DType::F64 => self.backward_as::<f64>(xs, weight, grad, bias),
            dtype => candle_core::bail!("scalenet-linear: no cpu backward pass for {dtype:?}"),
        }
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "scalenet-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_l: &Layout,
        weight: &CpuStorage,
        weight_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(xs, xs_l, weight, weight_l, None)
    }

    fn bwd(&self, xs: &Tensor, weight: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (grad_xs, grad_weight, _) = self.backward(xs, weight, grad, false)?;
        Ok((grad_xs, weight.track_op().then_some(grad_weight)))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "scalenet-linear-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_l: &Layout,
        weight: &CpuStorage,
        weight_l: &Layout,
        bias: &CpuStorage,
        bias_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(xs, xs_l, weight, weight_l, Some((bias, bias_l)))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_xs, grad_weight, grad_bias) = self.backward(xs, weight, grad, bias.track_op())?;
        Ok((grad_xs, weight.track_op().then_some(grad_weight), grad_bias))
    }
}

/// `max(xs, 0)`, its backward pass one masked copy of the gradient.
pub(super) struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "scalenet-relu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn run<T: Real>(xs: &[T]) -> Vec<T> {
            cpu::relu_forward(xs)
        }
        Ok((dispatch!("scalenet-relu", run, xs: xs_l), xs_l.shape().clone()))
    }

    fn bwd(&self, _: &Tensor, ys: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let values = match ys.dtype() {
            DType::F32 => tensor(with_slices::<f32, _, 2>([ys, grad], |[ys, grad]| cpu::relu_backward(ys, grad))?, ys)?,
            DType::F64 => tensor(with_slices::<f64, _, 2>([ys, grad], |[ys, grad]| cpu::relu_backward(ys, grad))?, ys)?,
            dtype => candle_core::bail!("scalenet-relu: no cpu backward pass for {dtype:?}"),
        };
        Ok(Some(values))
    }
}

/// `a * xs + b * ys` in one pass (a residual block's sum of its weighted branches).
pub(super) struct WeightedSum {
    pub a: f64,
    pub b: f64,
}

impl CustomOp2 for WeightedSum {
    fn name(&self) -> &'static str {
        "scalenet-weighted-sum"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout, ys: &CpuStorage, ys_l: &Layout) -> Result<(CpuStorage, Shape)> {
        let storage = match (xs, ys) {
            (CpuStorage::F32(xs), CpuStorage::F32(ys)) => CpuStorage::F32(cpu::weighted_sum(
                elements(xs, xs_l)?,
                self.a as f32,
                elements(ys, ys_l)?,
                self.b as f32,
            )),
            (CpuStorage::F64(xs), CpuStorage::F64(ys)) => {
                CpuStorage::F64(cpu::weighted_sum(elements(xs, xs_l)?, self.a, elements(ys, ys_l)?, self.b))
            }
            _ => candle_core::bail!("scalenet-weighted-sum: f32 or f64 operands of one dtype expected"),
        };
        Ok((storage, xs_l.shape().clone()))
    }

    fn bwd(&self, xs: &Tensor, ys: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_xs = xs.track_op().then(|| grad * self.a).transpose()?;
        let grad_ys = ys.track_op().then(|| grad * self.b).transpose()?;
        Ok((grad_xs, grad_ys))
    }
}

/// Average pooling of `(batch, channels, h, w)` by non-overlapping `k x k` windows.
pub(super) struct AvgPool {
    pub planes: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
}

impl CustomOp1 for AvgPool {
    fn name(&self) -> &'static str {
        "scalenet-avg-pool"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xs_l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (planes, height, width, k) = (self.planes, self.height, self.width, self.kernel);
        let storage = match xs {
            CpuStorage::F32(xs) => {
                CpuStorage::F32(cpu::avg_pool_forward(elements(xs, xs_l)?, planes, height, width, k))
            }
            CpuStorage::F64(xs) => {
                CpuStorage::F64(cpu::avg_pool_forward(elements(xs, xs_l)?, planes, height, width, k))
            }
            _ => candle_core::bail!("scalenet-avg-pool: f32 or f64 expected"),
        };
        let dims = xs_l.dims();
        Ok((storage, Shape::from((dims[0], dims[1], height / k, width / k))))
    }

    fn bwd(&self, xs: &Tensor, _: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (planes, height, width, k) = (self.planes, self.height, self.width, self.kernel);
        let values = match xs.dtype() {
            DType::F32 => tensor(
                with_slices::<f32, _, 1>([grad], |[grad]| cpu::avg_pool_backward(grad, planes, height, width, k))?,
                xs,
            )?,
            DType::F64 => tensor(
                with_slices::<f64, _, 1>([grad], |[grad]| cpu::avg_pool_backward(grad, planes, height, width, k))?,
                xs,
            )?,
            dtype => candle_core::bail!("scalenet-avg-pool: no cpu backward pass for {dtype:?}"),
        };
        Ok(Some(values))
    }
}

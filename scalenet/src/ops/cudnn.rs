//! The convolution on CUDA through cuDNN (feature `cudnn`): forward, backward-data and
//! backward-filter are one cuDNN call each, the bias one `cudnnAddTensor`, the input's fixed
//! factor the calls' `alpha`.
//!
//! - **Algorithms** are measured once per shape (`cudnnFind*`, what PyTorch's
//!   `torch.backends.cudnn.benchmark = True` does) and cached per device and thread; the fastest
//!   one that meets the precision setting is kept.
//! - **Workspace**: one buffer per device, grown to the largest size a chosen algorithm needs and
//!   reused by every call.
//! - **Precision**: f32 is exact by default (`CUDNN_FMA_MATH`: no TF32 tensor-core kernels, unlike
//!   candle's own `cudnn` path). [`super::set_allow_tf32`] opts in to TF32, as PyTorch's
//!   `torch.backends.cudnn.allow_tf32`. f32 and f64 run here; f16 and bf16 tensors go to candle's
//!   own convolution.
//!
//! cuDNN handles are neither `Send` nor `Sync`, so the state is kept per thread (as candle does).

use super::allow_tf32;
use super::cpu::ConvGeometry;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::cudnn::{result, sys};
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda::{CudaDType, DeviceId};
use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;

fn wrap(err: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::wrap(err)
}

/// The three products of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    BackwardData,
    BackwardFilter,
}

/// What an algorithm choice depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    pass: Pass,
    geometry: ConvGeometry,
    dtype: DType,
    tf32: bool,
}

/// A cuDNN algorithm of one of the three passes.
#[derive(Clone, Copy, Debug)]
enum Algorithm {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    BackwardData(sys::cudnnConvolutionBwdDataAlgo_t),
    BackwardFilter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// A measured choice: the algorithm, its math type and workspace.
#[derive(Clone, Copy, Debug)]
struct Choice {
    algorithm: Algorithm,
    math: sys::cudnnMathType_t,
    workspace: usize,
}

/// One device's cuDNN state on this thread.
struct DeviceState {
    handle: sys::cudnnHandle_t,
    choices: HashMap<Key, Choice>,
    workspace: Option<CudaSlice<u8>>,
}

impl Drop for DeviceState {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `create_handle` and is destroyed once, here.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

thread_local! {
    static STATES: RefCell<HashMap<DeviceId, DeviceState>> = RefCell::new(HashMap::new());
}

/// Runs `f` with this thread's cuDNN state for `device` (created on first use, on the device's
/// stream).
fn with_state<R>(device: &CudaDevice, f: impl FnOnce(&mut DeviceState) -> Result<R>) -> Result<R> {
    STATES.with(|states| {
        let mut states = states.borrow_mut();
        let stream = device.cuda_stream();
        // cuDNN runs in the thread's current context: make it the device's (cheap when it is).
        stream.context().bind_to_thread().map_err(wrap)?;
        if !states.contains_key(&device.id()) {
            let handle = result::create_handle().map_err(wrap)?;
            // SAFETY: a fresh handle and the device's live stream.
            unsafe { result::set_stream(handle, stream.cu_stream() as sys::cudaStream_t) }.map_err(wrap)?;
            states.insert(device.id(), DeviceState { handle, choices: HashMap::new(), workspace: None });
        }
        f(states.get_mut(&device.id()).expect("inserted above"))
    })
}

/// The cuDNN type of an element type (storage and computation alike).
fn data_type(dtype: DType) -> Result<sys::cudnnDataType_t> {
    Ok(match dtype {
        DType::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        DType::F64 => sys::cudnnDataType_t::CUDNN_DATA_DOUBLE,
        other => candle_core::bail!("scalenet conv2d on cudnn: f32 or f64 expected, got {other:?}"),
    })
}

/// The `alpha`/`beta` scaling parameters as cuDNN reads them: double for double data, else float.
enum Scaling {
    Single(f32),
    Double(f64),
}

impl Scaling {
    fn new(value: f64, dtype: DType) -> Self {
        if dtype == DType::F64 {
            Scaling::Double(value)
        } else {
            Scaling::Single(value as f32)
        }
    }

    fn ptr(&self) -> *const c_void {
        match self {
            Scaling::Single(v) => v as *const f32 as *const c_void,
            Scaling::Double(v) => v as *const f64 as *const c_void,
        }
    }
}

/// The descriptors of one convolution: input, filter, output, bias and the convolution itself.
struct Descriptors {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    bias: sys::cudnnTensorDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
}

impl Descriptors {
    fn new(g: &ConvGeometry, dtype: DType) -> Result<Self> {
        use sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let data = data_type(dtype)?;
        let int = |n: usize| i32::try_from(n).map_err(|_| candle_core::Error::Msg(format!("cudnn: {n} exceeds i32")));
        let descriptors = Descriptors {
            x: result::create_tensor_descriptor().map_err(wrap)?,
            w: result::create_filter_descriptor().map_err(wrap)?,
            y: result::create_tensor_descriptor().map_err(wrap)?,
            bias: result::create_tensor_descriptor().map_err(wrap)?,
            conv: result::create_convolution_descriptor().map_err(wrap)?,
        };
        // SAFETY: every descriptor was just created and is set once.
        unsafe {
            let x = [int(g.batch)?, int(g.in_channels)?, int(g.height)?, int(g.width)?];
            result::set_tensor4d_descriptor(descriptors.x, CUDNN_TENSOR_NCHW, data, x).map_err(wrap)?;
            let w = [int(g.out_channels)?, int(g.in_channels)?, int(g.kernel)?, int(g.kernel)?];
            result::set_filter4d_descriptor(descriptors.w, data, CUDNN_TENSOR_NCHW, w).map_err(wrap)?;
            let y = [int(g.batch)?, int(g.out_channels)?, int(g.out_height())?, int(g.out_width())?];
            result::set_tensor4d_descriptor(descriptors.y, CUDNN_TENSOR_NCHW, data, y).map_err(wrap)?;
            let bias = [1, int(g.out_channels)?, 1, 1];
            result::set_tensor4d_descriptor(descriptors.bias, CUDNN_TENSOR_NCHW, data, bias).map_err(wrap)?;
            let (p, s) = (int(g.padding)?, int(g.stride)?);
            let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
            result::set_convolution2d_descriptor(descriptors.conv, p, p, s, s, 1, 1, mode, data).map_err(wrap)?;
        }
        Ok(descriptors)
    }

    fn set_math(&self, math: sys::cudnnMathType_t) -> Result<()> {
        // SAFETY: a live convolution descriptor.
        unsafe { result::set_convolution_math_type(self.conv, math) }.map_err(wrap)
    }
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created in `new` and is destroyed once, here.
        unsafe {
            let _ = result::destroy_tensor_descriptor(self.x);
            let _ = result::destroy_filter_descriptor(self.w);
            let _ = result::destroy_tensor_descriptor(self.y);
            let _ = result::destroy_tensor_descriptor(self.bias);
            let _ = result::destroy_convolution_descriptor(self.conv);
        }
    }
}

/// The math types a choice may use: exact FMA kernels for f32 unless TF32 is allowed; anything
/// for f64 (no tensor-core path changes its precision).
fn math_allowed(math: sys::cudnnMathType_t, dtype: DType, tf32: bool) -> bool {
    dtype != DType::F32 || tf32 || math == sys::cudnnMathType_t::CUDNN_FMA_MATH
}

/// The math type the search starts from.
fn requested_math(dtype: DType, tf32: bool) -> sys::cudnnMathType_t {
    if dtype == DType::F32 && !tf32 {
        sys::cudnnMathType_t::CUDNN_FMA_MATH
    } else {
        sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
    }
}

/// Picks the fastest measured result (cuDNN sorts them by time) that succeeded and meets the
/// precision setting; failing that, the fastest that succeeded, run with the requested math type
/// (which restricts it to the kernels that type allows).
fn best<P: Copy>(
    results: &[P],
    count: i32,
    fields: impl Fn(&P) -> (Algorithm, sys::cudnnStatus_t, sys::cudnnMathType_t, usize),
    dtype: DType,
    tf32: bool,
) -> Option<Choice> {
    let succeeded: Vec<_> = results[..count.clamp(0, results.len() as i32) as usize]
        .iter()
        .map(fields)
        .filter(|(_, status, _, _)| *status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
        .collect();
    let allowed = succeeded.iter().find(|(_, _, math, _)| math_allowed(*math, dtype, tf32));
    match allowed {
        Some(&(algorithm, _, math, workspace)) => Some(Choice { algorithm, math, workspace }),
        None => succeeded.first().map(|&(algorithm, _, _, workspace)| Choice {
            algorithm,
            math: requested_math(dtype, tf32),
            workspace,
        }),
    }
}

impl DeviceState {
    /// The cached choice for `key`, measured with `cudnnFind*` on first use.
    fn choice(&mut self, key: Key, d: &Descriptors) -> Result<Choice> {
        if let Some(choice) = self.choices.get(&key) {
            return Ok(*choice);
        }
        d.set_math(requested_math(key.dtype, key.tf32))?;
        let (dtype, tf32, h) = (key.dtype, key.tf32, self.handle);
        let mut count = 0i32;
        // One `cudnnFind*` call: its result type, the algorithm's variant and its descriptors.
        macro_rules! find {
            ($find:ident, $perf:ty, $variant:ident, $($descriptor:expr),+) => {{
                let mut perf = [std::mem::zeroed::<$perf>(); 16];
                sys::$find(h, $($descriptor),+, 16, &mut count, perf.as_mut_ptr()).result().map_err(wrap)?;
                let fields = |p: &$perf| (Algorithm::$variant(p.algo), p.status, p.mathType, p.memory);
                best(&perf[..], count, fields, dtype, tf32)
            }};
        }
        // SAFETY: live handle and descriptors; each result array has the requested length.
        let choice = unsafe {
            match key.pass {
                Pass::Forward => {
                    find!(
                        cudnnFindConvolutionForwardAlgorithm,
                        sys::cudnnConvolutionFwdAlgoPerf_t,
                        Forward,
                        d.x,
                        d.w,
                        d.conv,
                        d.y
                    )
                }
                Pass::BackwardData => find!(
                    cudnnFindConvolutionBackwardDataAlgorithm,
                    sys::cudnnConvolutionBwdDataAlgoPerf_t,
                    BackwardData,
                    d.w,
                    d.y,
                    d.conv,
                    d.x
                ),
                Pass::BackwardFilter => find!(
                    cudnnFindConvolutionBackwardFilterAlgorithm,
                    sys::cudnnConvolutionBwdFilterAlgoPerf_t,
                    BackwardFilter,
                    d.x,
                    d.y,
                    d.conv,
                    d.w
                ),
            }
        };
        let Some(choice) = choice else {
            candle_core::bail!(
                "cudnn found no {:?} algorithm for {:?} in {dtype:?} with tf32 {}",
                key.pass,
                key.geometry,
                if tf32 { "allowed" } else { "off" }
            )
        };
        self.choices.insert(key, choice);
        Ok(choice)
    }

    /// The shared workspace, grown to at least `bytes`.
    fn workspace(&mut self, device: &CudaDevice, bytes: usize) -> Result<(*mut c_void, usize)> {
        if bytes == 0 {
            return Ok((std::ptr::null_mut(), 0));
        }
        if self.workspace.as_ref().is_none_or(|w| w.len() < bytes) {
            // SAFETY: scratch memory cuDNN writes before it reads.
            self.workspace = Some(unsafe { device.alloc::<u8>(bytes)? });
        }
        let workspace = self.workspace.as_mut().expect("allocated above");
        let stream = device.cuda_stream();
        let (ptr, _sync) = workspace.device_ptr_mut(&stream);
        Ok((ptr as *mut c_void, bytes))
    }
}

/// The contiguous elements of an operand.
fn view<'a, T: CudaDType + DeviceRepr>(storage: &'a CudaStorage, layout: &Layout) -> Result<CudaView<'a, T>> {
    if !layout.is_contiguous() {
        candle_core::bail!("scalenet conv2d on cudnn: contiguous operands expected");
    }
    let start = layout.start_offset();
    Ok(storage.as_cuda_slice::<T>()?.slice(start..start + layout.shape().elem_count()))
}

/// Which product to run, with its operands: `a` and `b` are (x, w) forward, (dy, w) for the
/// input gradient, (x, dy) for the filter gradient.
struct Launch<'a> {
    pass: Pass,
    geometry: ConvGeometry,
    scale: f64,
    a: (&'a CudaStorage, &'a Layout),
    b: (&'a CudaStorage, &'a Layout),
    bias: Option<(&'a CudaStorage, &'a Layout)>,
}

impl Launch<'_> {
    fn output_len(&self) -> usize {
        let g = &self.geometry;
        let (a, b, c, d) = match self.pass {
            Pass::Forward => g.output_dims(),
            Pass::BackwardData => g.input_dims(),
            Pass::BackwardFilter => g.kernel_dims(),
        };
        a * b * c * d
    }

    fn run(&self) -> Result<CudaStorage> {
        let storage = self.a.0;
        match storage.dtype() {
            DType::F32 => self.run_typed::<f32>(),
            DType::F64 => self.run_typed::<f64>(),
            other => candle_core::bail!("scalenet conv2d on cudnn: f32 or f64 expected, got {other:?}"),
        }
    }

    fn run_typed<T: CudaDType + DeviceRepr>(&self) -> Result<CudaStorage> {
        let device = self.a.0.device().clone();
        let dtype = self.a.0.dtype();
        let stream = device.cuda_stream();
        let (a, b) = (view::<T>(self.a.0, self.a.1)?, view::<T>(self.b.0, self.b.1)?);
        // SAFETY: every element is written by the product below (beta = 0).
        let mut out = unsafe { device.alloc::<T>(self.output_len())? };
        let key = Key { pass: self.pass, geometry: self.geometry, dtype, tf32: allow_tf32() };
        let d = Descriptors::new(&self.geometry, dtype)?;
        let (alpha, zero, one) = (Scaling::new(self.scale, dtype), Scaling::new(0.0, dtype), Scaling::new(1.0, dtype));
        with_state(&device, |state| {
            let choice = state.choice(key, &d)?;
            d.set_math(choice.math)?;
            let (work, work_len) = state.workspace(&device, choice.workspace)?;
            let h = state.handle;
            let (a_ptr, _a_sync) = a.device_ptr(&stream);
            let (b_ptr, _b_sync) = b.device_ptr(&stream);
            let (out_ptr, _out_sync) = out.device_ptr_mut(&stream);
            let (a_ptr, b_ptr, out_ptr) = (a_ptr as *const c_void, b_ptr as *const c_void, out_ptr as *mut c_void);
            // SAFETY: descriptors match the operands' shapes and dtype (checked by the caller),
            // the algorithm and workspace come from cuDNN for these descriptors.
            unsafe {
                match choice.algorithm {
                    Algorithm::Forward(algo) => {
                        #[rustfmt::skip]
                        result::convolution_forward(h, alpha.ptr(), d.x, a_ptr, d.w, b_ptr, d.conv, algo, work, work_len, zero.ptr(), d.y, out_ptr)
                            .map_err(wrap)?;
                        if let Some((bias, layout)) = self.bias {
                            let bias = view::<T>(bias, layout)?;
                            let (bias_ptr, _bias_sync) = bias.device_ptr(&stream);
                            sys::cudnnAddTensor(
                                h,
                                one.ptr(),
                                d.bias,
                                bias_ptr as *const c_void,
                                one.ptr(),
                                d.y,
                                out_ptr,
                            )
                            .result()
                            .map_err(wrap)?;
                        }
                    }
                    Algorithm::BackwardData(algo) => {
                        #[rustfmt::skip]
                        result::convolution_backward_data(h, alpha.ptr(), d.w, b_ptr, d.y, a_ptr, d.conv, algo, work, work_len, zero.ptr(), d.x, out_ptr)
                            .map_err(wrap)?;
                    }
                    Algorithm::BackwardFilter(algo) => {
                        #[rustfmt::skip]
                        result::convolution_backward_filter(h, alpha.ptr(), d.x, a_ptr, d.y, b_ptr, d.conv, algo, work, work_len, zero.ptr(), d.w, out_ptr)
                            .map_err(wrap)?;
                    }
                }
            }
            Ok(())
        })?;
        Ok(CudaStorage::wrap_cuda_slice(out, device))
    }
}

/// `scale * conv2d(xs, kernel) (+ bias)` on cuDNN: a [`CustomOp2`] without bias, a [`CustomOp3`]
/// with; the backward pass runs cuDNN's backward-data (only when the input needs a gradient) and
/// backward-filter.
pub(super) struct Conv2d {
    pub geometry: ConvGeometry,
    pub scale: f64,
}

impl Conv2d {
    fn gradients(&self, xs: &Tensor, kernel: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let backward = |pass| ConvBackward { pass, geometry: self.geometry, scale: self.scale };
        let grad_xs = if xs.track_op() { Some(grad.apply_op2(kernel, backward(Pass::BackwardData))?) } else { None };
        let grad_kernel =
            if kernel.track_op() { Some(xs.apply_op2(&grad, backward(Pass::BackwardFilter))?) } else { None };
        Ok((grad_xs, grad_kernel))
    }
}

fn cuda_only(name: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{name} runs on cuda tensors only"))
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "scalenet-conv2d-cudnn"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Err(cuda_only(CustomOp2::name(self)))
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, k: &CudaStorage, kl: &Layout) -> Result<(CudaStorage, Shape)> {
        self.forward((xs, xl), (k, kl), None)
    }

    fn bwd(&self, xs: &Tensor, kernel: &Tensor, _: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.gradients(xs, kernel, grad)
    }
}

impl Conv2d {
    /// The forward pass on cuDNN, with the bias added when there is one.
    fn forward(
        &self,
        xs: (&CudaStorage, &Layout),
        kernel: (&CudaStorage, &Layout),
        bias: Option<(&CudaStorage, &Layout)>,
    ) -> Result<(CudaStorage, Shape)> {
        let launch = Launch { pass: Pass::Forward, geometry: self.geometry, scale: self.scale, a: xs, b: kernel, bias };
        Ok((launch.run()?, Shape::from(self.geometry.output_dims())))
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "scalenet-conv2d-cudnn-bias"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Err(cuda_only(CustomOp3::name(self)))
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        bias: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.forward((xs, xl), (k, kl), Some((bias, bl)))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        kernel: &Tensor,
        bias: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_xs, grad_kernel) = self.gradients(xs, kernel, grad)?;
        let grad_bias = if bias.track_op() { Some(grad.sum(vec![0, 2, 3])?) } else { None };
        Ok((grad_xs, grad_kernel, grad_bias))
    }
}

/// The input gradient (`apply_op2` on `(grad, kernel)`) or the filter gradient (on
/// `(xs, grad)`) of [`Conv2d`], as a graph node of its own.
struct ConvBackward {
    pass: Pass,
    geometry: ConvGeometry,
    scale: f64,
}

impl CustomOp2 for ConvBackward {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::BackwardFilter => "scalenet-conv2d-cudnn-backward-filter",
            _ => "scalenet-conv2d-cudnn-backward-data",
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Err(cuda_only(self.name()))
    }

    fn cuda_fwd(&self, a: &CudaStorage, al: &Layout, b: &CudaStorage, bl: &Layout) -> Result<(CudaStorage, Shape)> {
        let g = &self.geometry;
        let shape = Shape::from(match self.pass {
            Pass::BackwardFilter => g.kernel_dims(),
            _ => g.input_dims(),
        });
        let launch = Launch { pass: self.pass, geometry: *g, scale: self.scale, a: (a, al), b: (b, bl), bias: None };
        Ok((launch.run()?, shape))
    }
}

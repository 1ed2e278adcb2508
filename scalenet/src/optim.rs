//! Optimizers whose step is one pass per parameter tensor: [`Sgd`] (momentum and weight decay as
//! PyTorch's `torch.optim.SGD`) and [`AdamW`] (as candle-nn's and PyTorch's), both implementing
//! candle-nn's [`Optimizer`] so they drop into any candle training loop.
//!
//! candle-nn's optimizers update a parameter with a chain of tensor ops (4 passes and allocations
//! for SGD, about 15 for AdamW). Here, on the CPU (f32, f64), each parameter is updated in place
//! by one kernel that reads its gradient and updates the optimizer state in the same pass, the
//! state kept in host memory beside the optimizer. On other devices the same formulas run as
//! tensor ops.
//!
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use scalenet::optim::{AdamW, ParamsAdamW};
//!
//! let w = Var::from_tensor(&Tensor::new(&[1f32, -2.], &Device::Cpu)?)?;
//! let mut opt = AdamW::new(vec![w.clone()], ParamsAdamW { lr: 0.1, ..Default::default() })?;
//! let loss = w.as_tensor().sqr()?.sum_all()?;
//! opt.backward_step(&loss)?;
//! // The first AdamW step moves every coordinate by about lr against its gradient's sign.
//! let moved = w.as_tensor().to_vec1::<f32>()?;
//! assert!((moved[0] - 0.899).abs() < 1e-3 && (moved[1] + 1.898).abs() < 1e-3);
//! # Ok::<(), candle_core::Error>(())
//! ```

use crate::ops::cpu::{self, AdamStep, Real};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var};
use candle_nn::Optimizer;
use std::sync::Mutex;

pub use candle_nn::ParamsAdamW;

/// Optimizer state in host memory, in the parameter's dtype.
#[derive(Debug)]
enum HostBuffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl HostBuffer {
    fn zeros(var: &Var) -> Self {
        match var.dtype() {
            DType::F64 => HostBuffer::F64(vec![0.0; var.elem_count()]),
            _ => HostBuffer::F32(vec![0.0; var.elem_count()]),
        }
    }
}

/// State of one parameter: host buffers where the parameter is on the CPU path, tensors elsewhere.
#[derive(Debug)]
enum State {
    Host(Mutex<Vec<HostBuffer>>),
    Device(Vec<Tensor>),
}

impl State {
    fn new(var: &Var, buffers: usize) -> Result<Self> {
        Ok(if on_cpu_path(var) {
            State::Host(Mutex::new((0..buffers).map(|_| HostBuffer::zeros(var)).collect()))
        } else {
            State::Device((0..buffers).map(|_| var.zeros_like()).collect::<Result<_>>()?)
        })
    }
}

fn on_cpu_path(var: &Var) -> bool {
    var.device().is_cpu() && matches!(var.dtype(), DType::F32 | DType::F64) && var.is_contiguous()
}

/// The elements of a contiguous operand.
fn elements<'a, T>(values: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    if !layout.is_contiguous() {
        candle_core::bail!("scalenet optimizer: contiguous operands expected");
    }
    Ok(&values[layout.start_offset()..][..layout.shape().elem_count()])
}

fn elements_mut<'a, T>(values: &'a mut [T], layout: &Layout) -> Result<&'a mut [T]> {
    if !layout.is_contiguous() {
        candle_core::bail!("scalenet optimizer: contiguous operands expected");
    }
    Ok(&mut values[layout.start_offset()..][..layout.shape().elem_count()])
}

/// The parameters of [`Sgd`]; [`Default`] gives PyTorch's (`lr` 1e-3, no momentum, no weight
/// decay), and `ParamsSgd { lr: 0.1, ..Default::default() }` changes one.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamsSgd {
    /// The learning rate.
    pub lr: f64,
    /// The heavy-ball factor (0 for plain SGD), without dampening.
    pub momentum: f64,
    /// L2 penalty added to the gradient (coupled, as PyTorch's SGD).
    pub weight_decay: f64,
}

impl ParamsSgd {
    /// Plain SGD at learning rate `lr`: no momentum, no weight decay.
    pub fn new(lr: f64) -> Self {
        ParamsSgd { lr, ..Default::default() }
    }
}

impl Default for ParamsSgd {
    fn default() -> Self {
        ParamsSgd { lr: 1e-3, momentum: 0.0, weight_decay: 0.0 }
    }
}

impl From<f64> for ParamsSgd {
    fn from(lr: f64) -> Self {
        ParamsSgd::new(lr)
    }
}

/// Stochastic gradient descent with optional momentum and weight decay, one pass per parameter.
#[derive(Debug)]
pub struct Sgd {
    vars: Vec<(Var, State)>,
    params: ParamsSgd,
}

impl Sgd {
    /// The parameters it was created with.
    pub fn params(&self) -> &ParamsSgd {
        &self.params
    }
}

struct SgdUpdate<'a> {
    params: &'a ParamsSgd,
    /// The momentum buffer, if any.
    state: &'a Mutex<Vec<HostBuffer>>,
}

fn lock(state: &Mutex<Vec<HostBuffer>>) -> Result<std::sync::MutexGuard<'_, Vec<HostBuffer>>> {
    state.lock().map_err(|_| candle_core::Error::msg("scalenet optimizer: state poisoned by an earlier panic"))
}

impl InplaceOp2 for SgdUpdate<'_> {
    fn name(&self) -> &'static str {
        "scalenet-sgd"
    }

    fn cpu_fwd(&self, theta: &mut CpuStorage, theta_l: &Layout, grad: &CpuStorage, grad_l: &Layout) -> Result<()> {
        let p = self.params;
        let mut state = lock(self.state)?;
        match (theta, grad, state.first_mut()) {
            (CpuStorage::F32(theta), CpuStorage::F32(grad), buffer) => {
                let buffer = match buffer {
                    Some(HostBuffer::F32(b)) => Some(b.as_mut_slice()),
                    None => None,
                    Some(_) => candle_core::bail!("scalenet-sgd: state of another dtype"),
                };
                cpu::sgd_update(
                    elements_mut(theta, theta_l)?,
                    elements(grad, grad_l)?,
                    buffer,
                    p.lr as f32,
                    p.momentum as f32,
                    p.weight_decay as f32,
                );
            }
            (CpuStorage::F64(theta), CpuStorage::F64(grad), buffer) => {
                let buffer = match buffer {
                    Some(HostBuffer::F64(b)) => Some(b.as_mut_slice()),
                    None => None,
                    Some(_) => candle_core::bail!("scalenet-sgd: state of another dtype"),
                };
                cpu::sgd_update(
                    elements_mut(theta, theta_l)?,
                    elements(grad, grad_l)?,
                    buffer,
                    p.lr,
                    p.momentum,
                    p.weight_decay,
                );
            }
            _ => candle_core::bail!("scalenet-sgd: f32 or f64 parameter and gradient of one dtype expected"),
        }
        Ok(())
    }
}

impl Optimizer for Sgd {
    type Config = ParamsSgd;

    fn new(vars: Vec<Var>, params: ParamsSgd) -> Result<Self> {
        let buffers = usize::from(params.momentum != 0.0);
        let vars = vars
            .into_iter()
            .filter(|var| var.dtype().is_float())
            .map(|var| State::new(&var, buffers).map(|state| (var, state)))
            .collect::<Result<_>>()?;
        Ok(Sgd { vars, params })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let p = &self.params;
        for (var, state) in &mut self.vars {
            let Some(grad) = grads.get(var) else { continue };
            match state {
                State::Host(state) => {
                    var.as_tensor().inplace_op2(&grad.contiguous()?, &SgdUpdate { params: p, state })?;
                }
                State::Device(buffers) => {
                    let mut direction = (grad + (var.as_tensor() * p.weight_decay)?)?;
                    if let Some(buffer) = buffers.first_mut() {
                        *buffer = ((&*buffer * p.momentum)? + direction)?;
                        direction = buffer.clone();
                    }
                    var.set(&(var.as_tensor() - (direction * p.lr)?)?)?;
                }
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}

/// AdamW (decoupled weight decay, bias-corrected moments) with candle-nn's [`ParamsAdamW`], one
/// pass per parameter.
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<(Var, State)>,
    params: ParamsAdamW,
    step: i32,
}

impl AdamW {
    /// The parameters it was created with.
    pub fn params(&self) -> &ParamsAdamW {
        &self.params
    }

    fn constants<T: Real>(&self) -> AdamStep<T> {
        let p = &self.params;
        AdamStep {
            lr: T::from_f64(p.lr),
            beta1: T::from_f64(p.beta1),
            beta2: T::from_f64(p.beta2),
            eps: T::from_f64(p.eps),
            decay: T::from_f64(1.0 - p.lr * p.weight_decay),
            correction1: T::from_f64(1.0 / (1.0 - p.beta1.powi(self.step))),
            correction2: T::from_f64(1.0 / (1.0 - p.beta2.powi(self.step))),
        }
    }
}

struct AdamUpdate<'a> {
    constants32: AdamStep<f32>,
    constants64: AdamStep<f64>,
    /// The first and second moments.
    state: &'a Mutex<Vec<HostBuffer>>,
}

impl InplaceOp2 for AdamUpdate<'_> {
    fn name(&self) -> &'static str {
        "scalenet-adamw"
    }

    fn cpu_fwd(&self, theta: &mut CpuStorage, theta_l: &Layout, grad: &CpuStorage, grad_l: &Layout) -> Result<()> {
        let mut state = lock(self.state)?;
        match (theta, grad, state.as_mut_slice()) {
            (CpuStorage::F32(theta), CpuStorage::F32(grad), [HostBuffer::F32(m), HostBuffer::F32(v)]) => {
                cpu::adamw_update(elements_mut(theta, theta_l)?, elements(grad, grad_l)?, m, v, self.constants32)
            }
            (CpuStorage::F64(theta), CpuStorage::F64(grad), [HostBuffer::F64(m), HostBuffer::F64(v)]) => {
                cpu::adamw_update(elements_mut(theta, theta_l)?, elements(grad, grad_l)?, m, v, self.constants64)
            }
            _ => candle_core::bail!("scalenet-adamw: f32 or f64 parameter, gradient and state of one dtype expected"),
        }
        Ok(())
    }
}

impl Optimizer for AdamW {
    type Config = ParamsAdamW;

    fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let vars = vars
            .into_iter()
            .filter(|var| var.dtype().is_float())
            .map(|var| State::new(&var, 2).map(|state| (var, state)))
            .collect::<Result<_>>()?;
        Ok(AdamW { vars, params, step: 0 })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let (constants32, constants64) = (self.constants::<f32>(), self.constants::<f64>());
        let p = self.params.clone();
        for (var, state) in &mut self.vars {
            let Some(grad) = grads.get(var) else { continue };
            match state {
                State::Host(state) => {
                    let op = AdamUpdate { constants32, constants64, state };
                    var.as_tensor().inplace_op2(&grad.contiguous()?, &op)?;
                }
                State::Device(moments) => {
                    let c = constants64;
                    let m = ((&moments[0] * p.beta1)? + (grad * (1.0 - p.beta1))?)?;
                    let v = ((&moments[1] * p.beta2)? + (grad.sqr()? * (1.0 - p.beta2))?)?;
                    let adjusted = ((&m * c.correction1)? / ((&v * c.correction2)?.sqrt()? + p.eps)?)?;
                    var.set(&((var.as_tensor() * c.decay)? - (adjusted * p.lr)?)?)?;
                    moments[0] = m;
                    moments[1] = v;
                }
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sgd_defaults_are_pytorchs() {
        // torch.optim.SGD: lr=1e-3, momentum=0, weight_decay=0.
        assert_eq!(ParamsSgd::default(), ParamsSgd { lr: 1e-3, momentum: 0.0, weight_decay: 0.0 });
        assert_eq!(ParamsSgd::new(0.1), ParamsSgd { lr: 0.1, ..Default::default() });
    }

    fn max_difference(a: &Var, b: &Var) -> f64 {
        (a.as_tensor() - b.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// Runs `steps` steps of two optimizers on copies of the same random parameters and the same
    /// quadratic-plus-cubic loss, returning the largest parameter difference at the end.
    fn compare<A: Optimizer, B: Optimizer>(dtype: DType, config_a: A::Config, config_b: B::Config) -> Result<f64> {
        let shapes: [&[usize]; 3] = [&[3, 5], &[70_000], &[]];
        let inits = shapes
            .iter()
            .map(|s| Tensor::randn(0f64, 1., *s, &Device::Cpu)?.to_dtype(dtype))
            .collect::<Result<Vec<_>>>()?;
        let vars_a = inits.iter().map(Var::from_tensor).collect::<Result<Vec<_>>>()?;
        let vars_b = inits.iter().map(Var::from_tensor).collect::<Result<Vec<_>>>()?;
        let mut a = A::new(vars_a.clone(), config_a)?;
        let mut b = B::new(vars_b.clone(), config_b)?;
        let loss = |vars: &[Var]| -> Result<Tensor> {
            let mut total = Tensor::zeros((), dtype, &Device::Cpu)?;
            for var in vars {
                let x = var.as_tensor();
                total = (total + ((x.sqr()? * 0.5)? + (x.powf(3.0)? * 0.1)?)?.sum_all()?)?;
            }
            Ok(total)
        };
        for _ in 0..5 {
            a.backward_step(&loss(&vars_a)?)?;
            b.backward_step(&loss(&vars_b)?)?;
        }
        Ok(vars_a.iter().zip(&vars_b).map(|(x, y)| max_difference(x, y)).fold(0.0, f64::max))
    }

    /// A reference SGD with momentum and weight decay in tensor ops: PyTorch's update.
    struct ReferenceSgd {
        vars: Vec<(Var, Tensor)>,
        params: ParamsSgd,
    }

    impl Optimizer for ReferenceSgd {
        type Config = ParamsSgd;
        fn new(vars: Vec<Var>, params: ParamsSgd) -> Result<Self> {
            let vars = vars.into_iter().map(|v| v.zeros_like().map(|z| (v, z))).collect::<Result<_>>()?;
            Ok(ReferenceSgd { vars, params })
        }
        fn step(&mut self, grads: &GradStore) -> Result<()> {
            for (var, buffer) in &mut self.vars {
                let g = (grads.get(var).unwrap() + (var.as_tensor() * self.params.weight_decay)?)?;
                *buffer = ((&*buffer * self.params.momentum)? + g)?;
                var.set(&(var.as_tensor() - (&*buffer * self.params.lr)?)?)?;
            }
            Ok(())
        }
        fn learning_rate(&self) -> f64 {
            self.params.lr
        }
        fn set_learning_rate(&mut self, lr: f64) {
            self.params.lr = lr;
        }
    }

    #[test]
    fn sgd_matches_candle_and_pytorch_formulas() -> Result<()> {
        for (dtype, tolerance) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            assert!(compare::<Sgd, candle_nn::SGD>(dtype, ParamsSgd::new(0.05), 0.05)? < tolerance);
            let params = ParamsSgd { lr: 0.05, momentum: 0.9, weight_decay: 0.01 };
            assert!(compare::<Sgd, ReferenceSgd>(dtype, params.clone(), params)? < tolerance);
        }
        Ok(())
    }

    #[test]
    fn adamw_matches_candle() -> Result<()> {
        for (dtype, tolerance) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            let params = ParamsAdamW { lr: 0.01, weight_decay: 0.1, ..Default::default() };
            assert!(compare::<AdamW, candle_nn::AdamW>(dtype, params.clone(), params)? < tolerance);
        }
        Ok(())
    }
}

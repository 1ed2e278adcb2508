//! # scalenet
//!
//! Design ReLU networks by calculation instead of trial and error. `scalenet` turns the scaling
//! calculus of Defazio & Bottou ("A scaling calculus for the design and initialization of ReLU
//! networks", Neural Computing and Applications, 2022) into a Rust tool: declare a network with
//! [`network!`]; when it expands, the macro infers every shape, propagates the forward and
//! backward second moments through every layer, rejects what breaks the calculus with compile
//! errors that point at the layer and say how to fix it, and generates a candle module whose
//! weights use geometric-mean initialization with the fixed scalars the calculus requires.
//!
//! ```
//! use scalenet::candle_core::{DType, Device, Module, Tensor};
//! use scalenet::candle_nn::VarMap;
//! use scalenet::network;
//!
//! network! {
//!     /// The paper's 3-layer MLP (section 9).
//!     pub struct Mlp {
//!         input: [784],
//!         fc1: linear(384),
//!         relu,
//!         fc2: linear(64),
//!         relu,
//!         fc3: linear(10),
//!     }
//! }
//!
//! # fn main() -> scalenet::candle_core::Result<()> {
//! let varmap = VarMap::new();
//! let net = Mlp::new_seeded(&varmap, DType::F32, &Device::Cpu, 42)?;
//! let logits = net.forward(&Tensor::randn(0f32, 1., (8, 784), &Device::Cpu)?)?;
//! assert_eq!(logits.dims(), [8, 10]);
//! println!("{}", Mlp::report());
//! # Ok(())
//! # }
//! ```
//!
//! ## Getting started
//!
//! ```toml
//! [dependencies]
//! scalenet = { git = "https://github.com/scalenet/scalenet" }
//! ```
//!
//! `scalenet` re-exports the candle it is built on (`scalenet::candle_core`,
//! `scalenet::candle_nn`), so the versions always agree. A whole training run: data, network,
//! optimizer, a watch that names the step where training goes wrong, and a checkpoint.
//!
//! ```
//! use scalenet::candle_core::{DType, Device, Tensor, D};
//! use scalenet::candle_nn::{loss, ModuleT, Optimizer, VarMap};
//! use scalenet::checkpoint::{load_checkpoint, save_atomically};
//! use scalenet::finite::TrainingWatch;
//! use scalenet::network;
//! use scalenet::optim::{ParamsSgd, Sgd};
//!
//! network! {
//!     /// A tabular classifier; with dropout it is `ModuleT` only: call `forward_t(xs, train)`.
//!     pub struct Classifier {
//!         input: [16],
//!         fc1: linear(64),
//!         relu,
//!         dropout(0.1),
//!         fc2: linear(64),
//!         relu,
//!         fc3: linear(3),
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // On a few cores, keep candle's idle threads from spinning (once, first thing in `main`).
//! scalenet::ops::park_idle_candle_threads();
//! let device = Device::Cpu;
//! // 256 examples of 16 features (any numbers will do); the label is the largest of the first three.
//! let features = (Tensor::arange(0f32, 4096., &device)? * 1.618)?.sin()?.reshape((256, 16))?;
//! let labels = features.narrow(1, 0, 3)?.argmax(D::Minus1)?;
//!
//! let varmap = VarMap::new();
//! let net = Classifier::new_seeded(&varmap, DType::F32, &device, 0)?;
//! let mut sgd = Sgd::new(varmap.all_vars(), ParamsSgd { lr: 0.5, momentum: 0.9, ..Default::default() })?;
//! let mut watch = TrainingWatch::new();
//! let mut losses = Vec::new();
//! for _epoch in 0..10 {
//!     for batch in 0..8 {
//!         let (xs, ys) = (features.narrow(0, 32 * batch, 32)?, labels.narrow(0, 32 * batch, 32)?);
//!         let loss = loss::cross_entropy(&net.forward_t(&xs, true)?, &ys)?;
//!         losses.push(watch.backward_step(&mut sgd, &varmap, &loss)?);
//!     }
//! }
//! let last_epoch = losses[losses.len() - 8..].iter().sum::<f64>() / 8.0;
//! assert!(last_epoch < 0.5 * losses[0], "{last_epoch} against {}", losses[0]);
//!
//! let path = std::env::temp_dir().join(format!("classifier-{}.safetensors", std::process::id()));
//! save_atomically(&varmap, &path)?; // a temporary file and a rename: never a half-written file
//! let restored = VarMap::new();
//! Classifier::new_seeded(&restored, DType::F32, &device, 1)?; // build first, then load
//! load_checkpoint(&restored, &path)?;
//! # std::fs::remove_file(&path)?;
//! # Ok(())
//! # }
//! ```
//!
//! Where to go next:
//!
//! - [`network!`]: the whole DSL (options, layers, residual blocks, what is generated, errors and
//!   warnings), `init: mirrored` among the options;
//! - [`Report`] and `Net::report()`: the plan as a table, every column explained under it;
//! - [`optim`] (SGD and AdamW in one pass per parameter), [`checkpoint`] (atomic, all-or-nothing,
//!   checksummed), [`finite`] (NaNs and divergence named where they start), [`data`] (safetensors,
//!   LIBSVM, IDX and CIFAR batches);
//! - [`ops::park_idle_candle_threads`] and `docs/performance.md` for CPU speed, `docs/gpu.md` for
//!   CUDA, [`distributed`] for data-parallel training over MPI or NCCL, [`precision`] for bf16 and
//!   f16 with f32 master weights and the loss scale the calculus chooses;
//! - [`calculus`]: the scaling calculus itself, as plain numbers ([`calculus::Plan`],
//!   [`calculus::NetworkSpec`]).
//!
//! ## Features
//!
//! The core ([`network!`], [`Network`], the layers in [`nn`], [`Report`], [`data`]) needs none.
//! `diagnostics` adds `scalenet::diagnostics` (measured moments and gammas against the plan,
//! Gauss-Newton blocks, coordinate checks, JSON); `plot` adds their figures as PNG. `cuda`,
//! `cudnn`, `metal`, `mkl` and `accelerate` pass through to candle. `mpi` and `nccl` add the
//! engines of [`distributed`] data-parallel training (MPI needs an MPI library and libclang to
//! build: `apt-get install libopenmpi-dev openmpi-bin libclang-dev` on Debian).

#![warn(missing_docs)]

extern crate self as scalenet;

pub use candle_core;
pub use candle_nn;
#[doc(inline)]
pub use scalenet_calculus as calculus;
pub use scalenet_macros::network;

#[doc(hidden)]
pub mod __private;
pub mod checkpoint;
pub mod data;
#[cfg(feature = "diagnostics")]
pub mod diagnostics;
pub mod distributed;
pub mod ensemble;
pub mod finite;
mod init;
pub mod mirrored;
pub mod nn;
pub mod ops;
pub mod optim;
#[cfg(feature = "plot")]
pub mod plot;
pub mod precision;
pub mod regions;
mod report;
pub mod triangle;

pub use report::Report;

// Every Rust block of the README compiles and runs as a doc test, so the guide stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// What every network generated by [`network!`] offers to generic code (the diagnostics
/// measure any `Network`).
pub trait Network {
    /// The struct's name.
    const NAME: &'static str;

    /// The calculus's plan for this network.
    fn plan() -> &'static calculus::Plan;

    /// Creates the parameters in `varmap` from a `rand` generator seeded with `seed` (see the
    /// generated `new_seeded`).
    fn new_seeded(
        varmap: &candle_nn::VarMap,
        dtype: candle_core::DType,
        device: &candle_core::Device,
        seed: u64,
    ) -> candle_core::Result<Self>
    where
        Self: Sized;

    /// The forward pass, calling `hook(step, output)` after every top-level step of
    /// `plan().steps` and continuing with what it returns.
    #[allow(clippy::type_complexity)]
    fn forward_hooked(
        &self,
        xs: &candle_core::Tensor,
        train: bool,
        hook: Option<&mut dyn FnMut(usize, candle_core::Tensor) -> candle_core::Result<candle_core::Tensor>>,
    ) -> candle_core::Result<candle_core::Tensor>;

    /// The forward pass with every value checked: an error names the input, or the first step of
    /// `plan().steps` whose output holds a NaN or an infinity (and where), instead of letting it
    /// reach the output. About one extra pass over each activation; for debugging, like
    /// PyTorch's anomaly detection.
    fn forward_checked(&self, xs: &candle_core::Tensor, train: bool) -> candle_core::Result<candle_core::Tensor> {
        if let Some(found) = finite::first_non_finite(xs)? {
            candle_core::bail!("{}: the input holds {found}", Self::NAME)
        }
        let steps = &Self::plan().steps;
        let mut check = |step: usize, ys: candle_core::Tensor| {
            if let Some(found) = finite::first_non_finite(&ys)? {
                let what = steps.get(step).and_then(|s| s.op_keyword()).unwrap_or("fixed scalar or block");
                candle_core::bail!(
                    "{}: step {step} ({what}) produced {found} of its output {:?}",
                    Self::NAME,
                    ys.dims()
                )
            }
            Ok(ys)
        };
        self.forward_hooked(xs, train, Some(&mut check))
    }
}

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
//! ## The DSL
//!
//! Options: `input: [C, H, W]` or `[D]` (required), `init: geometric | fan_in | fan_out |
//! arithmetic`, `typical_kernel: k` (`k*` of `c = 2/k*`; default: the most common kernel),
//! `output_std: 0.05`, `fixed_scalars: true`, `branch_scaling: true`.
//!
//! Layers, each optionally named (`conv1: conv(..)`): `conv(out, kernel = k, stride = s,
//! padding = p, bias = bool)`, `linear(out, bias = bool)`, `avg_pool(k)`, `relu`,
//! `leaky_relu(slope)`, `dropout(p)`, `flatten`, `scale(f)`, `scalar`, `bias`. Activations that
//! break the calculus (`sigmoid`, `tanh`, `gelu`, `silu`, `elu`, `softplus`, `softmax`) need
//! `#[allow(unscaled)]` before them.
//!
//! Residual blocks (section 11): `residual(beta = 0.5) { main branch layers } shortcut { .. }`
//! (no shortcut: the identity) and the section 11.1 pre-activation bottleneck
//! `bottleneck(out = 256, width = 64, stride = 1, beta = 0.5)`.

extern crate self as scalenet;

pub use candle_core;
pub use candle_nn;
pub use scalenet_calculus as calculus;
pub use scalenet_macros::network;

pub mod data;
pub mod diagnostics;
pub mod init;
pub mod nn;
mod report;
pub mod train;

pub use report::Report;

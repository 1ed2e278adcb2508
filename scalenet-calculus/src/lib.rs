//! The scaling calculus of Defazio & Bottou, "A scaling calculus for the design and initialization
//! of ReLU networks" (Neural Computing and Applications, 2022), as plain numbers.
//!
//! Given a sequential network's declaration ([`NetworkSpec`]), [`analyze`] checks the rules the
//! calculus needs (no max pooling, strides equal to kernels, positively homogeneous activations,
//! exact shapes; see [`rules`]), infers every shape, propagates the forward and backward second
//! moments through every op, chooses each weight's variance (geometric mean of fan-in and
//! fan-out, eq. 3, or a baseline), and inserts the fixed scalars that keep weights and biases
//! equally conditioned. The result is a [`Plan`], which prints as a table.
//!
//! This crate has no dependency on syn or candle: the `network!` macro runs it at compile time and
//! `scalenet` at run time.
//!
//! Its modules form one-way layers, each using only those before it (`tests/layering.rs` checks
//! the imports): the declaration (`spec`: [`NetworkSpec`], [`Op`]) and its diagnostics; the
//! geometry of a window; the model ([`moments`], [`correlation`], [`coherence`], [`borders`]); the
//! built steps ([`Step`], [`Plan`]); the [`registry`] of layer kinds, which says what each kind
//! means; then the passes over a network (shapes, the moments' and the borders' passes, the
//! [`rules`], the report) and the planner ([`analyze`]).
//!
//! ```
//! use scalenet_calculus::{analyze, NetworkSpec, Op, Shape};
//!
//! let spec = NetworkSpec::new(Shape::Vector { features: 784 })
//!     .named("fc1", Op::Linear { out_features: 384, bias: true })
//!     .layer(Op::Relu)
//!     .named("fc2", Op::Linear { out_features: 10, bias: true });
//! let plan = analyze(&spec).unwrap();
//! // Geometric init: every weight layer has the same gamma.
//! let gammas: Vec<f64> = plan.weight_steps().map(|s| s.step.gamma.unwrap()).collect();
//! assert!((gammas[0] / gammas[1] - 1.0).abs() < 1e-9);
//! println!("{plan}");
//! ```
#![warn(missing_docs)]

mod blocks;
mod border_pass;
pub mod borders;
pub mod coherence;
pub mod correlation;
mod diagnostic;
mod geometry;
pub mod moments;
mod plan;
mod planner;
pub mod precision;
mod propagate;
pub mod registry;
mod report;
pub mod rules;
mod shapes;
mod spec;

pub use diagnostic::{Diagnostic, Diagnostics, Fix, LayerField, Location, NetworkField, Rule};
pub use moments::{Moments, WeightGeometry};
pub use plan::{ParamInit, Plan, ScaleReason, Step, StepOp, StepRef, WeightInit};
pub use planner::{analyze, most_common_kernel, weight_second_moment};
pub use report::{global_pool_offset_share, number, OFFSET_DOMINATED_POOL};
pub use spec::{
    Format, InitScheme, LayerId, LayerSpec, Mirror, NetworkSpec, Residual, Shape, WeightLaw, DEFAULT_OUTPUT_STD,
    MAX_ELEMENTS,
};
pub use spec::{Normalization, Op, UnscaledActivation};

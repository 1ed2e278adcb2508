//! Activations: the positively homogeneous ReLU family the calculus keeps, and those that break
//! it (kept only with `#[allow(unscaled)]`).

use super::common::{keyword, no_args, same_gradient, same_shape};
use super::{ArgValue, BorderRule, OpDef, Param, ParamDefault, ParamKind, Params, Role, Runtime, UnscaledActivation};
use crate::diagnostic::LayerField;
use crate::moments::{self, Transfer};
use crate::registry::layer_rules as rules;
use crate::spec::Op;

pub static RELU: OpDef = OpDef {
    keyword: "relu",
    aliases: &[],
    example: "relu",
    params: Params::List(&[]),
    branches: false,
    role: Role::Activation,
    build: |_| Op::Relu,
    args: no_args,
    rules: &[],
    shape: same_shape,
    transfer: |_, _, input| moments::leaky_relu(input, 0.0),
    gradient: |_, step, dy| dy.through_activation(&step.input, 0.0),
    describe: keyword,
    runtime: Runtime::Call { function: "relu", train: false, homogeneous: true },
    borders: BorderRule::Pointwise,
};

pub static LEAKY_RELU: OpDef = OpDef {
    keyword: "leaky_relu",
    aliases: &[],
    example: "leaky_relu(0.01)",
    params: Params::List(&[Param::positional("slope", ParamKind::Number, LayerField::Slope)
        .meaning("negative slope", "its negative slope")
        .default(ParamDefault::Value(ArgValue::Number(0.01)))]),
    branches: false,
    role: Role::Activation,
    build: |args| Op::LeakyRelu { slope: args.number(0) },
    args: |op| match *op {
        Op::LeakyRelu { slope } => vec![Some(ArgValue::Number(slope))],
        _ => unreachable!(),
    },
    rules: &[rules::check_leaky_relu_slope],
    shape: same_shape,
    transfer: |op, _, input| moments::leaky_relu(input, op.activation_slope().unwrap_or(0.0)),
    gradient: |op, step, dy| dy.through_activation(&step.input, op.activation_slope().unwrap_or(0.0)),
    describe: |op, _| match op {
        Op::LeakyRelu { slope } => format!("leaky_relu {slope}"),
        _ => unreachable!(),
    },
    runtime: Runtime::Call { function: "leaky_relu", train: false, homogeneous: true },
    borders: BorderRule::Pointwise,
};

/// An activation that is not positively homogeneous: rejected unless kept with
/// `#[allow(unscaled)]`, then modelled by its linear regime (the identity) and flagged.
macro_rules! unscaled {
    ($name:ident, $variant:ident, $keyword:literal, $aliases:expr, $function:literal) => {
        pub static $name: OpDef = OpDef {
            keyword: $keyword,
            aliases: $aliases,
            example: "relu",
            params: Params::List(&[]),
            branches: false,
            role: Role::Unscaled,
            build: |_| Op::Unscaled(UnscaledActivation::$variant),
            args: no_args,
            rules: &[rules::reject_non_homogeneous_activations],
            shape: same_shape,
            transfer: |_, _, input| Transfer::identity(input),
            gradient: same_gradient,
            describe: |op, _| format!("{} (unscaled!)", op.keyword()),
            runtime: Runtime::Call { function: $function, train: false, homogeneous: false },
            borders: BorderRule::Pointwise,
        };
    };
}

unscaled!(SIGMOID, Sigmoid, "sigmoid", &[], "sigmoid");
unscaled!(TANH, Tanh, "tanh", &[], "tanh");
unscaled!(GELU, Gelu, "gelu", &[], "gelu");
unscaled!(SILU, Silu, "silu", &["swish"], "silu");
unscaled!(ELU, Elu, "elu", &[], "elu");
unscaled!(SOFTPLUS, Softplus, "softplus", &[], "softplus");
unscaled!(SOFTMAX, Softmax, "softmax", &[], "softmax");

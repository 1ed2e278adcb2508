//! Ops without parameters that the calculus models exactly: dropout, flatten and a fixed scale.

use super::common::{identity, keyword, no_args, same_gradient, same_shape};
use super::{ArgValue, BorderRule, OpDef, Param, ParamDefault, ParamKind, Params, Role, Runtime};
use crate::diagnostic::LayerField;
use crate::moments::Transfer;
use crate::registry::layer_rules as rules;
use crate::spec::Op;
use crate::spec::Shape;

pub static DROPOUT: OpDef = OpDef {
    keyword: "dropout",
    aliases: &[],
    example: "dropout(0.5)",
    params: Params::List(&[Param::positional("p", ParamKind::Number, LayerField::Probability)
        .meaning("drop probability", "its drop probability")
        .default(ParamDefault::Value(ArgValue::Number(0.5)))]),
    branches: false,
    role: Role::Plain,
    build: |args| Op::Dropout { p: args.number(0) },
    args: |op| match *op {
        Op::Dropout { p } => vec![Some(ArgValue::Number(p))],
        _ => unreachable!(),
    },
    rules: &[rules::check_dropout_probability],
    shape: same_shape,
    // Evaluation-mode dropout is the identity; in training, inverted dropout multiplies both
    // second moments by 1/(1-p), which leaves sigma unchanged and scales every gamma alike.
    transfer: identity,
    gradient: same_gradient,
    describe: |op, _| match op {
        Op::Dropout { p } => format!("dropout {p}"),
        _ => unreachable!(),
    },
    runtime: Runtime::Call { function: "dropout", train: true, homogeneous: true },
    borders: BorderRule::Pointwise,
};

pub static FLATTEN: OpDef = OpDef {
    keyword: "flatten",
    aliases: &[],
    example: "flatten",
    params: Params::List(&[]),
    branches: false,
    role: Role::Reshape,
    build: |_| Op::Flatten,
    args: no_args,
    rules: &[],
    shape: |_, input, _, _| Some(Shape::Vector { features: input.numel() }),
    transfer: |_, _, input| Transfer::identity(input.as_vector()),
    // The vector gradient's entries come out of a linear layer, whose weights are uncorrelated.
    gradient: |_, step, dy| dy.white_on(step.input_shape),
    describe: keyword,
    runtime: Runtime::Call { function: "flatten", train: false, homogeneous: true },
    borders: BorderRule::Collapses,
};

pub static SCALE: OpDef = OpDef {
    keyword: "scale",
    aliases: &[],
    example: "scale(0.5)",
    params: Params::List(&[
        Param::positional("factor", ParamKind::Number, LayerField::Factor).meaning("factor", "a factor")
    ]),
    branches: false,
    role: Role::Plain,
    build: |args| Op::Scale { factor: args.number(0) },
    args: |op| match *op {
        Op::Scale { factor } => vec![Some(ArgValue::Number(factor))],
        _ => unreachable!(),
    },
    rules: &[rules::check_scale_factor],
    shape: same_shape,
    transfer: |op, _, input| match *op {
        Op::Scale { factor } => Transfer::scale(input, factor),
        _ => unreachable!(),
    },
    gradient: |op, _, dy| match *op {
        Op::Scale { factor } => dy.scaled(factor),
        _ => unreachable!(),
    },
    describe: |op, _| match op {
        Op::Scale { factor } => format!("scale ×{}", crate::number(*factor)),
        _ => unreachable!(),
    },
    runtime: Runtime::Call { function: "scale", train: false, homogeneous: true },
    borders: BorderRule::Pointwise,
};

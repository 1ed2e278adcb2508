//! Residual blocks (section 11), and the normalization layers the calculus replaces.

use super::common::{no_args, same_shape, unplanned, unplanned_gradient};
use super::{ArgValue, BorderRule, OpDef, Param, ParamDefault, ParamKind, Params, Role, Runtime};
use crate::diagnostic::LayerField;
use crate::registry::layer_rules as rules;
use crate::spec::Residual;
use crate::spec::{Normalization, Op};

pub static RESIDUAL: OpDef = OpDef {
    keyword: "residual",
    aliases: &[],
    example: "residual(beta = 0.5) { relu, conv(16, kernel = 3, padding = 1) }",
    params: Params::List(&[
        Param::named("beta", ParamKind::Number, LayerField::Beta).default(ParamDefault::Absent),
        Param::named("alpha", ParamKind::Number, LayerField::Alpha).default(ParamDefault::Absent),
    ]),
    branches: true,
    role: Role::Block,
    build: |args| {
        Op::Residual(Residual {
            alpha: args.optional_number(1),
            beta: args.optional_number(0),
            main: Vec::new(),
            shortcut: None,
        })
    },
    args: |op| match op {
        Op::Residual(block) => vec![block.beta.map(ArgValue::Number), block.alpha.map(ArgValue::Number)],
        _ => unreachable!(),
    },
    rules: &[rules::check_residual_weights],
    // Blocks are resolved by shape inference and combined by the planner.
    shape: same_shape,
    transfer: unplanned,
    gradient: unplanned_gradient,
    describe: |op, _| op.keyword().to_string(),
    runtime: Runtime::Branches,
    borders: BorderRule::Branches,
};

pub static BOTTLENECK: OpDef = OpDef {
    keyword: "bottleneck",
    aliases: &[],
    example: "bottleneck(out = 256, width = 64, stride = 1, beta = 0.5)",
    params: Params::List(&[
        Param::named("out", ParamKind::Count, LayerField::Size).meaning("output channels", "its output channels `out`"),
        Param::named("width", ParamKind::Count, LayerField::Width).meaning("inner width", "its inner `width`"),
        Param::named("stride", ParamKind::Count, LayerField::Stride).default(ParamDefault::Value(ArgValue::Count(1))),
        Param::named("beta", ParamKind::Number, LayerField::Beta).meaning("branch weight", "its branch weight `beta`"),
    ]),
    branches: false,
    role: Role::Block,
    build: |args| Op::Bottleneck {
        out_channels: args.count(0),
        width: args.count(1),
        stride: args.count(2),
        beta: args.number(3),
    },
    args: |op| match *op {
        Op::Bottleneck { out_channels, width, stride, beta } => vec![
            Some(ArgValue::Count(out_channels)),
            Some(ArgValue::Count(width)),
            Some(ArgValue::Count(stride)),
            Some(ArgValue::Number(beta)),
        ],
        _ => unreachable!(),
    },
    rules: &[rules::check_positive_sizes, rules::check_residual_weights],
    shape: same_shape,
    transfer: unplanned,
    gradient: unplanned_gradient,
    describe: |op, _| op.keyword().to_string(),
    runtime: Runtime::Branches,
    borders: BorderRule::Branches,
};

/// Normalization layers, rejected with the fix; their arguments do not matter.
macro_rules! normalization {
    ($name:ident, $variant:ident, $keyword:literal) => {
        pub static $name: OpDef = OpDef {
            keyword: $keyword,
            aliases: &[],
            example: "relu",
            params: Params::Ignored,
            branches: false,
            role: Role::Rejected,
            build: |_| Op::Normalization(Normalization::$variant),
            args: no_args,
            rules: &[rules::reject_normalization],
            shape: same_shape,
            transfer: unplanned,
            gradient: unplanned_gradient,
            describe: |op, _| op.keyword().to_string(),
            runtime: Runtime::Rejected,
            borders: BorderRule::NotPlanned,
        };
    };
}

normalization!(BATCH_NORM, BatchNorm, "batch_norm");
normalization!(LAYER_NORM, LayerNorm, "layer_norm");
normalization!(GROUP_NORM, GroupNorm, "group_norm");

//! Layers with learnable parameters: convolution, linear, the learnable scalar and the
//! standalone bias.

use super::common::{identity, keyword, needs_image, no_args, same_gradient, same_shape};
use super::{ArgValue, BorderRule, OpDef, Param, ParamDefault, ParamKind, Params, Role, Runtime};
use crate::coherence::Covariance;
use crate::diagnostic::{Diagnostics, LayerField, Location, Rule};
use crate::geometry::{conv_window, Window, WindowError};
use crate::moments::{self, Moments, Transfer, WeightGeometry};
use crate::plan::{centred_draw_factor, ParamInit, Step};
use crate::registry::layer_rules as rules;
use crate::spec::Op;
use crate::spec::{LayerId, Shape};

const fn flag(value: bool) -> ParamDefault {
    ParamDefault::Value(ArgValue::Flag(value))
}

const fn count(value: usize) -> ParamDefault {
    ParamDefault::Value(ArgValue::Count(value))
}

pub static CONV: OpDef = OpDef {
    keyword: "conv",
    aliases: &[],
    example: "conv(16, kernel = 3, padding = 1)",
    params: Params::List(&[
        Param::positional("out", ParamKind::Count, LayerField::Size)
            .meaning("output channels", "its number of output channels first"),
        Param::named("kernel", ParamKind::Count, LayerField::Kernel).meaning("kernel size", "a kernel size"),
        Param::named("stride", ParamKind::Count, LayerField::Stride).default(count(1)),
        Param::named("padding", ParamKind::Count, LayerField::Padding).default(count(0)),
        Param::named("bias", ParamKind::Flag, LayerField::Kind).default(flag(true)),
        Param::named("groups", ParamKind::Count, LayerField::Groups).default(count(1)),
    ]),
    branches: false,
    role: Role::Weight,
    build: |args| Op::Conv2d {
        out_channels: args.count(0),
        kernel: args.count(1),
        stride: args.count(2),
        padding: args.count(3),
        bias: args.flag(4),
        groups: args.count(5),
    },
    args: |op| match *op {
        Op::Conv2d { out_channels, kernel, stride, padding, bias, groups } => vec![
            Some(ArgValue::Count(out_channels)),
            Some(ArgValue::Count(kernel)),
            Some(ArgValue::Count(stride)),
            Some(ArgValue::Count(padding)),
            Some(ArgValue::Flag(bias)),
            Some(ArgValue::Count(groups)),
        ],
        _ => unreachable!(),
    },
    rules: &[rules::check_positive_sizes, rules::reject_mismatched_strides],
    shape: conv_shape,
    transfer: weight_transfer,
    gradient: weight_gradient,
    describe: |op, step| match (op, &step.params) {
        (Op::Conv2d { kernel, stride, padding, groups, .. }, Some(ParamInit::Weight(w))) => {
            let (fan_in, fan_out) = (w.geometry.fan_in * groups, w.geometry.fan_out * groups);
            let mut text = format!("conv {fan_in}→{fan_out} k{kernel}");
            if *groups != 1 {
                text += &format!(" g{groups}");
            }
            if *stride != 1 {
                text += &format!(" s{stride}");
            }
            if *padding != 0 {
                text += &format!(" p{padding}");
            }
            if !w.bias {
                text += " no-bias";
            }
            text
        }
        _ => "conv".to_string(),
    },
    runtime: Runtime::Parameters,
    borders: BorderRule::Window,
};

fn conv_shape(op: &Op, input: Shape, id: LayerId, diagnostics: &mut Diagnostics) -> Option<Shape> {
    let Op::Conv2d { out_channels, kernel, stride, padding, groups, .. } = *op else { unreachable!() };
    let Shape::Image { channels, height, width } = input else {
        needs_image(op, input, id, diagnostics);
        return None;
    };
    if out_channels == 0 || kernel == 0 || stride == 0 || groups == 0 {
        return None;
    }
    if !channels.is_multiple_of(groups) || !out_channels.is_multiple_of(groups) {
        report_groups(channels, out_channels, groups, id, diagnostics);
        return None;
    }
    let mut report = |error: WindowError, size: usize| error.report(id, kernel, stride, padding, size, diagnostics);
    let h = conv_window(height, kernel, stride, padding).map_err(|e| report(e, height)).ok();
    let w = if width == height {
        h
    } else {
        conv_window(width, kernel, stride, padding).map_err(|e| report(e, width)).ok()
    };
    Some(Shape::Image { channels: out_channels, height: h?, width: w? })
}

/// A grouped convolution splits its input channels into `groups` equal sets and its output
/// channels likewise, each output set seeing one input set: both counts must be multiples of
/// `groups`, or some channel would belong to a partial group (PyTorch and cuDNN reject it too).
/// The message offers the groups that divide both, the depthwise case first when it applies.
fn report_groups(channels: usize, out_channels: usize, groups: usize, id: LayerId, diagnostics: &mut Diagnostics) {
    let common = gcd(channels, out_channels);
    let nearest = (1..=common).filter(|g| common.is_multiple_of(*g)).min_by_key(|g| g.abs_diff(groups)).unwrap_or(1);
    let (which, count) = if channels.is_multiple_of(groups) { ("output", out_channels) } else { ("input", channels) };
    let depthwise =
        if channels == out_channels { format!(" (`groups = {channels}` is depthwise)") } else { String::new() };
    diagnostics.push(
        Rule::GroupsDivideChannels,
        Location::layer(id, LayerField::Groups),
        format!(
            "`groups = {groups}` does not divide the {count} {which} channels, so the groups cannot be equal; use a divisor of both {channels} and {out_channels}, such as `groups = {nearest}`{depthwise}"
        ),
    );
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Conv and linear: Appendix A, eqs. (9)-(10), with the padding coverage.
fn weight_transfer(op: &Op, step: &Step, input: Moments) -> Transfer {
    let weight = step.weight().expect("the planner gives every weight layer its init");
    let mut transfer =
        weight_layer_moments(op, step.input_shape, &weight.geometry, weight.second_moment, weight.centred, input);
    transfer.output = transfer.output.scaled(weight.borders.forward.sqrt());
    transfer.backward_gain *= weight.borders.backward;
    transfer
}

/// Conv and linear on a uniform map (the border profiles' factors apart): eqs. (9)-(10) with the
/// padding coverage, and for `centred` rows the input without its common mean plus the offsets
/// that padding leaves at border outputs (see [`Window::centred_border_offsets`]).
pub(crate) fn weight_layer_moments(
    op: &Op,
    input_shape: Shape,
    geometry: &WeightGeometry,
    second_moment: f64,
    centred: bool,
    input: Moments,
) -> Transfer {
    let row_len = geometry.fan_in * geometry.kernel * geometry.kernel;
    let seen = if centred { input.without_common_mean() } else { input };
    let mut transfer = moments::weight_layer(seen, geometry, second_moment);
    // A map out of a map: its within part's correlation between positions (see `correlation`).
    if matches!(input_shape, Shape::Image { .. }) && geometry.area_out > 1 {
        let window = window(op);
        let (correlation, within_factor) =
            seen.correlation.through_weights(window.kernel, window.stride, centred.then_some(row_len));
        let output = &mut transfer.output;
        output.second = output.coherent + (output.second - output.coherent).max(0.0) * within_factor;
        output.correlation = correlation;
    }
    if !centred {
        return transfer;
    }
    let unit = input.mean * input.mean * second_moment * centred_draw_factor(row_len) * geometry.fan_in as f64;
    let (second, coherent) = window(op).centred_border_offsets(input_shape);
    transfer.output.second += unit * second;
    transfer.output.coherent += unit * coherent;
    transfer.output.fixed += unit * coherent;
    // A centred row of N Gaussian entries spans N - 1 directions.
    transfer.output.dispersion = moments::row_dispersion(input.dispersion, row_len.saturating_sub(1));
    transfer
}

/// Conv and linear: back through independent weights (see [`crate::coherence`]).
fn weight_gradient(op: &Op, step: &Step, gradient: &Covariance) -> Covariance {
    let weight = step.weight().expect("the planner gives every weight layer its init");
    let geometry = &weight.geometry;
    let row_len = geometry.fan_in * geometry.kernel * geometry.kernel;
    gradient.through_weight_layer(
        window(op),
        step.input_shape,
        geometry.fan_out,
        weight.second_moment,
        weight.centred.then_some(row_len),
    )
}

/// A weight layer's window along each axis (a linear layer's is a single tap).
pub(crate) fn window(op: &Op) -> Window {
    match *op {
        Op::Conv2d { kernel, stride, padding, .. } => Window { kernel, stride, padding },
        _ => Window::LINEAR,
    }
}

pub static LINEAR: OpDef = OpDef {
    keyword: "linear",
    aliases: &[],
    example: "linear(10)",
    params: Params::List(&[
        Param::positional("out", ParamKind::Count, LayerField::Size)
            .meaning("output features", "its number of output features"),
        Param::named("bias", ParamKind::Flag, LayerField::Kind).default(flag(true)),
    ]),
    branches: false,
    role: Role::Weight,
    build: |args| Op::Linear { out_features: args.count(0), bias: args.flag(1) },
    args: |op| match *op {
        Op::Linear { out_features, bias } => vec![Some(ArgValue::Count(out_features)), Some(ArgValue::Flag(bias))],
        _ => unreachable!(),
    },
    rules: &[rules::check_positive_sizes],
    shape: |op, input, id, diagnostics| {
        let Op::Linear { out_features, .. } = *op else { unreachable!() };
        if let Shape::Image { channels, height, width } = input {
            diagnostics.push(Rule::VectorInput,
                Location::layer(id, LayerField::Kind),
                format!(
                    "`linear` needs a vector input, but its input is the image {input}; insert `flatten` before it (giving [{}])",
                    channels * height * width
                ),
            );
            return None;
        }
        (out_features > 0).then_some(Shape::Vector { features: out_features })
    },
    transfer: weight_transfer,
    gradient: weight_gradient,
    describe: |op, step| match (op, &step.params) {
        (Op::Linear { bias, .. }, Some(ParamInit::Weight(w))) => {
            format!("linear {}→{}{}", w.geometry.fan_in, w.geometry.fan_out, if *bias { "" } else { " no-bias" })
        }
        _ => "linear".to_string(),
    },
    runtime: Runtime::Parameters,
    borders: BorderRule::Collapses,
};

pub static SCALAR: OpDef = OpDef {
    keyword: "scalar",
    aliases: &[],
    example: "scalar",
    params: Params::List(&[]),
    branches: false,
    role: Role::Scalar,
    build: |_| Op::Scalar,
    args: no_args,
    rules: &[],
    shape: same_shape,
    // A scalar that starts as the identity.
    transfer: identity,
    gradient: same_gradient,
    describe: |op, step| match &step.params {
        Some(ParamInit::Scalar { value, fixed }) => {
            format!("scalar u₀={} ×{}", crate::number(*value), crate::number(*fixed))
        }
        _ => op.keyword().to_string(),
    },
    runtime: Runtime::Parameters,
    borders: BorderRule::Pointwise,
};

pub static BIAS: OpDef = OpDef {
    keyword: "bias",
    aliases: &[],
    example: "bias",
    params: Params::List(&[]),
    branches: false,
    role: Role::Bias,
    build: |_| Op::Bias,
    args: no_args,
    rules: &[],
    shape: same_shape,
    // Zero at initialization (assumption 4).
    transfer: identity,
    gradient: same_gradient,
    describe: keyword,
    runtime: Runtime::Parameters,
    borders: BorderRule::Pointwise,
};

/// Geometry of a weight layer from its input and output shapes.
pub(crate) fn weight_geometry(op: &Op, input: Shape, output: Shape) -> Option<moments::WeightGeometry> {
    let (kernel, coverage, groups) = match (op, input, output) {
        (
            &Op::Conv2d { kernel, stride, padding, groups, .. },
            Shape::Image { height, width, .. },
            Shape::Image { height: out_h, width: out_w, .. },
        ) => (
            kernel,
            moments::coverage_1d(height, kernel, stride, padding, out_h)
                * moments::coverage_1d(width, kernel, stride, padding, out_w),
            groups.max(1),
        ),
        (Op::Linear { .. }, _, _) => (1, 1.0, 1),
        _ => return None,
    };
    // A grouped convolution is `groups` convolutions side by side: each output sees `in / groups`
    // channels and each input feeds `out / groups`, the fans of eqs. (3)-(5) and Appendix A.
    Some(moments::WeightGeometry {
        fan_in: input.channels() / groups,
        fan_out: output.channels() / groups,
        kernel,
        area_in: input.area(),
        area_out: output.area(),
        coverage,
    })
}

//! Average pooling (a window, or the whole image) and max pooling, which is declared only to be
//! rejected.

use super::common::{needs_image, unplanned, unplanned_gradient};
use super::{ArgValue, BorderRule, OpDef, Param, ParamDefault, ParamKind, Params, Role, Runtime};
use crate::diagnostic::{Diagnostics, LayerField, Location, Rule};
use crate::geometry::conv_window;
use crate::moments;
use crate::registry::layer_rules as rules;
use crate::spec::Op;
use crate::spec::{LayerId, Shape};

pub static AVG_POOL: OpDef = OpDef {
    keyword: "avg_pool",
    aliases: &[],
    example: "avg_pool(2)",
    params: Params::List(&[
        Param::positional("kernel", ParamKind::Count, LayerField::Size).meaning("kernel size", "a kernel size"),
        Param::named("stride", ParamKind::Count, LayerField::Stride).default(ParamDefault::SameAs(0)),
    ]),
    branches: false,
    role: Role::Pooling,
    build: |args| Op::AvgPool2d { kernel: args.count(0), stride: args.count(1) },
    args: pool_args,
    rules: &[rules::check_positive_sizes, rules::reject_mismatched_strides],
    shape: pool_shape,
    transfer: |op, _, input| match *op {
        Op::AvgPool2d { kernel, .. } => moments::avg_pool(input, kernel),
        _ => unreachable!(),
    },
    gradient: |op, step, dy| match *op {
        Op::AvgPool2d { kernel, .. } => dy.through_avg_pool(kernel, step.input_shape),
        _ => unreachable!(),
    },
    describe: |op, _| match op {
        Op::AvgPool2d { kernel, .. } => format!("avg_pool {kernel}"),
        _ => unreachable!(),
    },
    runtime: Runtime::Call { function: "avg_pool", train: false, homogeneous: true },
    borders: BorderRule::Window,
};

pub static GLOBAL_AVG_POOL: OpDef = OpDef {
    keyword: "global_avg_pool",
    aliases: &[],
    example: "global_avg_pool",
    params: Params::List(&[]),
    branches: false,
    role: Role::Pooling,
    build: |_| Op::GlobalAvgPool,
    args: |_| Vec::new(),
    rules: &[],
    shape: |op, input, id, diagnostics| match input {
        Shape::Image { channels, .. } => Some(Shape::Vector { features: channels }),
        Shape::Vector { .. } => {
            needs_image(op, input, id, diagnostics);
            None
        }
    },
    // A pooling window as large as the image (Appendix B with k^2 = H W), seen as a vector
    // after: the whole second moment of each entry is then its own channel's.
    transfer: |_, step, input| {
        let (height, width) = match step.input_shape {
            Shape::Image { height, width, .. } => (height, width),
            Shape::Vector { .. } => (1, 1),
        };
        let mut transfer = moments::global_average(input, height, width);
        transfer.output = transfer.output.as_vector();
        transfer
    },
    gradient: |_, step, dy| dy.through_global_avg_pool(step.input_shape),
    describe: |_, step| format!("global_avg_pool {}x", step.input_shape.area()),
    runtime: Runtime::Call { function: "global_avg_pool", train: false, homogeneous: true },
    borders: BorderRule::Collapses,
};

pub static MAX_POOL: OpDef = OpDef {
    keyword: "max_pool",
    aliases: &[],
    example: "avg_pool(2)",
    params: AVG_POOL.params,
    branches: false,
    role: Role::Rejected,
    build: |args| Op::MaxPool2d { kernel: args.count(0), stride: args.count(1) },
    args: pool_args,
    rules: &[rules::reject_max_pooling, rules::check_positive_sizes],
    shape: pool_shape,
    transfer: unplanned,
    gradient: unplanned_gradient,
    describe: |op, _| op.keyword().to_string(),
    runtime: Runtime::Rejected,
    borders: BorderRule::NotPlanned,
};

fn pool_args(op: &Op) -> Vec<Option<ArgValue>> {
    match *op {
        Op::AvgPool2d { kernel, stride } | Op::MaxPool2d { kernel, stride } => {
            vec![Some(ArgValue::Count(kernel)), Some(ArgValue::Count(stride))]
        }
        _ => unreachable!(),
    }
}

/// Average pooling must tile its input exactly: candle's pooling backward is wrong otherwise,
/// and a dropped row breaks the assumption that every entry feeds the next layer.
fn pool_shape(op: &Op, input: Shape, id: LayerId, diagnostics: &mut Diagnostics) -> Option<Shape> {
    let (Op::AvgPool2d { kernel, stride } | Op::MaxPool2d { kernel, stride }) = *op else { unreachable!() };
    let Shape::Image { channels, height, width } = input else {
        needs_image(op, input, id, diagnostics);
        return None;
    };
    if kernel == 0 || stride == 0 {
        return None;
    }
    if matches!(op, Op::AvgPool2d { .. }) && (height % kernel != 0 || width % kernel != 0) {
        let fits = |size: usize| size.div_ceil(kernel) * kernel;
        let sizes = if height == width { height.to_string() } else { format!("{height} and {width}") };
        diagnostics.push(Rule::ExactWindow,
            Location::layer(id, LayerField::Size),
            format!(
                "`avg_pool({kernel})` does not tile its {height}x{width} input exactly; pad or crop the previous layer to {}x{} or pick a kernel that divides {sizes}",
                fits(height),
                fits(width)
            ),
        );
        return None;
    }
    let h = conv_window(height, kernel, stride, 0).ok()?;
    let w = conv_window(width, kernel, stride, 0).ok()?;
    Some(Shape::Image { channels, height: h, width: w })
}

#[cfg(test)]
mod tests {
    use crate::moments::{global_average, Moments};
    use crate::{analyze, LayerField, LayerId, Location, NetworkSpec, Op, Rule, ScaleReason, Shape, StepOp};

    fn head(input: Shape) -> NetworkSpec {
        NetworkSpec::new(input)
            .named("conv", Op::Conv2d { out_channels: 8, kernel: 3, stride: 1, padding: 1, bias: true, groups: 1 })
            .layer(Op::Relu)
            .layer(Op::GlobalAvgPool)
            .named("fc", Op::Linear { out_features: 10, bias: true })
    }

    #[test]
    fn global_average_pooling_flattens_whatever_image_reaches_it() {
        for (height, width) in [(8, 8), (5, 12), (1, 1)] {
            let plan = analyze(&head(Shape::Image { channels: 4, height, width })).unwrap();
            let pool =
                plan.steps.iter().find(|s| matches!(s.op, StepOp::Declared { op: Op::GlobalAvgPool, .. })).unwrap();
            assert_eq!(pool.output_shape, Shape::Vector { features: 8 });
        }
        let errors = analyze(&head(Shape::Vector { features: 4 })).unwrap_err();
        assert_eq!(errors.0[0].rule, Rule::ImageInput, "{errors}");
        let errors = analyze(&NetworkSpec::new(Shape::Vector { features: 4 }).layer(Op::GlobalAvgPool)).unwrap_err();
        assert_eq!(errors.0[0].location, Location::layer(LayerId(0), LayerField::Kind));
    }

    /// A window of the whole image: the channel-coherent part of the second moment stays, the
    /// rest is divided by the area (Appendix B with k^2 = H W), and each input gets 1/(H W) of
    /// the gradient. Here E[x^2] = 1 with mean 0.5 (coherent 0.25) over 16 positions.
    #[test]
    fn global_average_pooling_moments_in_plain_numbers() {
        let input = Moments { second: 1.0, mean: 0.5, coherent: 0.25, nonnegative: true, ..Moments::centred(0.0) };
        let t = global_average(input, 4, 4);
        assert!((t.output.second - (0.25 + 0.75 / 16.0)).abs() < 1e-15);
        assert!((t.backward_gain - 1.0 / 256.0).abs() < 1e-15);
        // Centred input: divided by the area.
        let t = global_average(Moments::centred(2.0), 4, 4);
        assert!((t.output.second - 2.0 / 16.0).abs() < 1e-15);
    }

    /// The calculus's promise holds across the pool: the weights before and after it get the same
    /// gamma, with a fixed scalar after the pool that says why.
    #[test]
    fn layers_around_a_global_pool_are_equally_conditioned() {
        let plan = analyze(&head(Shape::Image { channels: 4, height: 8, width: 8 })).unwrap();
        let gammas: Vec<f64> = plan.weight_steps().map(|s| s.step.gamma.unwrap()).collect();
        assert!((gammas[0] / gammas[1] - 1.0).abs() < 1e-9, "{gammas:?}");
        let pooled = plan
            .steps
            .iter()
            .any(|s| matches!(&s.op, StepOp::FixedScale { reasons, .. } if reasons.contains(&ScaleReason::Pooling)));
        assert!(pooled, "{plan}");
    }
}

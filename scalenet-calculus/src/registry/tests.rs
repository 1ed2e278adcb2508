//! Every kind is registered once and round-trips through its arguments.

use super::*;

/// `build` and `args` are inverses for every kind with an argument list.
#[test]
fn every_kind_round_trips_through_its_arguments() {
    let examples = [
        Op::Conv2d { out_channels: 6, kernel: 5, stride: 5, padding: 2, bias: false, groups: 1 },
        Op::Conv2d { out_channels: 8, kernel: 3, stride: 1, padding: 1, bias: true, groups: 4 },
        Op::Linear { out_features: 10, bias: true },
        Op::AvgPool2d { kernel: 2, stride: 2 },
        Op::GlobalAvgPool,
        Op::MaxPool2d { kernel: 3, stride: 2 },
        Op::Relu,
        Op::LeakyRelu { slope: 0.2 },
        Op::Dropout { p: 0.25 },
        Op::Flatten,
        Op::Scale { factor: -1.5 },
        Op::Scalar,
        Op::Bias,
        Op::Bottleneck { out_channels: 64, width: 16, stride: 2, beta: 0.5 },
        Op::Unscaled(UnscaledActivation::Softplus),
    ];
    for op in examples {
        assert_eq!(Op::from_args(op.keyword(), &op.args()), Some(op.clone()), "{}", op.keyword());
    }
}

#[test]
fn keywords_are_unique_and_include_blocks() {
    let all: Vec<&str> = keywords().collect();
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(all.len(), unique.len());
    assert!(all.contains(&"residual") && all.contains(&"bottleneck") && all.contains(&"swish"));
    for def in REGISTRY {
        assert!(std::ptr::eq(lookup(def.keyword).unwrap(), *def));
    }
}

#[test]
fn every_kind_is_registered() {
    for def in REGISTRY {
        if let Params::List(params) = def.params {
            let given: Vec<Option<ArgValue>> = params
                .iter()
                .map(|p| match p.kind {
                    ParamKind::Count => Some(ArgValue::Count(1)),
                    ParamKind::Number => Some(ArgValue::Number(0.5)),
                    ParamKind::Flag => Some(ArgValue::Flag(true)),
                })
                .collect();
            let op = (def.build)(&Args::resolve(def, &given).unwrap());
            assert!(std::ptr::eq(op.def(), *def), "{}", def.keyword);
        }
    }
}

/// Every kind's border rule agrees with what it does: blocks hold branches, rejected kinds are
/// never planned, and the kinds with a window over the map are exactly the convolution and
/// average pooling.
#[test]
fn border_rules_agree_with_the_kinds() {
    for def in REGISTRY {
        let expected = match def.role {
            Role::Block => Some(BorderRule::Branches),
            Role::Rejected => Some(BorderRule::NotPlanned),
            _ => None,
        };
        if let Some(expected) = expected {
            assert_eq!(def.borders, expected, "{}", def.keyword);
        }
        let windowed = matches!(def.keyword, "conv" | "avg_pool");
        assert_eq!(def.borders == BorderRule::Window, windowed, "{}", def.keyword);
    }
}

/// A grouped convolution is `groups` convolutions side by side: on `[8, 6, 6]`, `conv(8, kernel =
/// 3, groups = 4)` has fans 2 and 2 and a `[8, 2, 3, 3]` weight. Geometric init with `c = 2/3`
/// (typical kernel 3) draws `E[W^2] = c / (k sqrt(2 x 2)) = 1/9`, and a centred unit input leaves
/// with `E[y^2] = n_in k^2 E[W^2] = 2 x 9 / 9 = 2` forward and `E[dx^2] = n_out k^2 E[W^2] E[dy^2]`
/// per unit of output gradient, times the area ratio `16/36` (no padding: full coverage).
#[test]
fn grouped_convolution_fans_are_per_group() {
    use crate::{analyze, NetworkSpec, ParamInit};
    let conv = Op::Conv2d { out_channels: 8, kernel: 3, stride: 1, padding: 0, bias: false, groups: 4 };
    let spec = NetworkSpec::new(Shape::Image { channels: 8, height: 6, width: 6 })
        .named("conv", conv)
        .with_fixed_scalars(false)
        .with_spatial_coherence(false);
    let plan = analyze(&spec).unwrap();
    let step = plan.step("conv").unwrap();
    let Some(ParamInit::Weight(weight)) = &step.params else { panic!("a weight") };
    assert_eq!((weight.geometry.fan_in, weight.geometry.fan_out), (2, 2));
    assert_eq!(weight.shape, [8, 2, 3, 3]);
    assert!((weight.second_moment - 1.0 / 9.0).abs() < 1e-12, "{}", weight.second_moment);
    assert!((step.forward.second - 2.0).abs() < 1e-12, "{}", step.forward.second);
    assert!((step.backward_gain - 2.0 * 16.0 / 36.0).abs() < 1e-12, "{}", step.backward_gain);
}

/// Groups that do not divide both channel counts are one error on `groups`, naming a divisor of
/// both; depthwise is offered where the counts are equal.
#[test]
fn groups_must_divide_both_channel_counts() {
    use crate::{analyze, LayerField, Location, NetworkSpec, Rule};
    let conv = |out_channels, groups| Op::Conv2d { out_channels, kernel: 1, stride: 1, padding: 0, bias: true, groups };
    let image = |channels| Shape::Image { channels, height: 4, width: 4 };
    for (input, out, groups, expected) in [
        (6, 8, 4, "does not divide the 6 input channels, so the groups cannot be equal; use a divisor of both 6 and 8, such as `groups = 2`"),
        (8, 6, 4, "does not divide the 6 output channels"),
        (12, 12, 5, "such as `groups = 4` (`groups = 12` is depthwise)"),
    ] {
        let diagnostics = analyze(&NetworkSpec::new(image(input)).layer(conv(out, groups))).unwrap_err();
        let all: Vec<_> = diagnostics.iter().collect();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].rule, Rule::GroupsDivideChannels);
        assert!(matches!(all[0].location, Location::Layer { field: LayerField::Groups, .. }));
        assert!(all[0].message.contains(expected), "{}", all[0].message);
    }
    let zero = analyze(&NetworkSpec::new(image(4)).layer(conv(4, 0))).unwrap_err();
    assert!(zero.iter().any(|d| d.message == "the number of groups must be at least 1"), "{zero:?}");
}

/// Mirrored orthogonal init draws its half over every input channel: a grouped convolution is
/// rejected on its `groups`, with the init that supports it.
#[test]
fn mirrored_init_rejects_grouped_convolutions() {
    use crate::{analyze, LayerField, Location, NetworkSpec, WeightLaw};
    let spec = NetworkSpec::new(Shape::Image { channels: 4, height: 4, width: 4 })
        .layer(Op::Conv2d { out_channels: 4, kernel: 1, stride: 1, padding: 0, bias: true, groups: 2 })
        .layer(Op::Relu)
        .layer(Op::Flatten)
        .layer(Op::Linear { out_features: 2, bias: true })
        .with_weights(WeightLaw::MirroredOrthogonal);
    let diagnostics = analyze(&spec).unwrap_err();
    let error = diagnostics.iter().find(|d| matches!(d.location, Location::Layer { field: LayerField::Groups, .. }));
    let error = error.unwrap_or_else(|| panic!("no error on groups: {diagnostics:?}"));
    assert!(error.message.contains("use `init: geometric`"), "{}", error.message);
}

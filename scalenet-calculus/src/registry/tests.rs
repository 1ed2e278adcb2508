//! Every kind is registered once and round-trips through its arguments.

use super::*;

/// `build` and `args` are inverses for every kind with an argument list.
#[test]
fn every_kind_round_trips_through_its_arguments() {
    let examples = [
        Op::Conv2d { out_channels: 6, kernel: 5, stride: 5, padding: 2, bias: false },
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

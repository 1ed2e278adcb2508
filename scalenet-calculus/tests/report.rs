//! The report explains itself: a legend for every column, every fixed scalar with its reasons in
//! words, layers named as in the table.

use scalenet_calculus::{analyze, LayerSpec, NetworkSpec, Op, Shape, StepOp, UnscaledActivation};

fn lenet() -> NetworkSpec {
    NetworkSpec::new(Shape::Image { channels: 3, height: 32, width: 32 })
        .named("conv1", Op::Conv2d { out_channels: 6, kernel: 5, stride: 1, padding: 2, bias: true, groups: 1 })
        .layer(Op::Relu)
        .layer(Op::AvgPool2d { kernel: 2, stride: 2 })
        .named("conv2", Op::Conv2d { out_channels: 16, kernel: 5, stride: 1, padding: 0, bias: true, groups: 1 })
        .layer(Op::Relu)
        .layer(Op::AvgPool2d { kernel: 2, stride: 2 })
        .layer(Op::Flatten)
        .named("fc1", Op::Linear { out_features: 120, bias: true })
        .layer(Op::Relu)
        .named("fc2", Op::Linear { out_features: 10, bias: true })
        .with_typical_kernel(5)
}

#[test]
fn every_column_has_a_legend_entry() {
    let report = analyze(&lenet()).unwrap().to_string();
    let header = report.lines().nth(1).unwrap();
    let legend: String = report.lines().skip_while(|l| !l.starts_with("columns:")).collect::<Vec<_>>().join("\n");
    for column in header.split_whitespace() {
        assert!(
            legend.contains(&format!("{column} =")) || legend.contains(&format!("{column},")),
            "no legend for {column}:\n{legend}"
        );
    }
}

#[test]
fn fixed_scalars_give_their_reasons_in_words_with_the_section() {
    let plan = analyze(&lenet()).unwrap();
    let report = plan.to_string();
    assert!(report.contains("kernel 1 ≠ typical kernel 5 §6.2"), "{report}");
    assert!(report.contains("output std target §7"), "{report}");
    assert!(report.contains("input balances weights and biases §8.1"), "{report}");
    // No reason is a bare section number ("output std 7" read as a std of 7).
    for line in report.lines().filter(|l| l.contains("fixed ×")) {
        let reasons = &line[line.find('(').unwrap() + 1..line.find(')').unwrap()];
        for reason in reasons.split(", ") {
            let last = reason.rsplit(' ').next().unwrap();
            let bare = last.chars().all(|c| c.is_ascii_digit() || c == '.');
            assert!(!bare, "a reason ending in a bare number, `{reason}`, in: {line}");
        }
    }
}

#[test]
fn a_kept_unscaled_activation_is_named_as_in_the_table_and_every_scalar_has_a_reason() {
    let mut sigmoid = LayerSpec::new(Op::Unscaled(UnscaledActivation::Sigmoid));
    sigmoid.allow_unscaled = true;
    let mut spec =
        NetworkSpec::new(Shape::Vector { features: 16 }).named("fc1", Op::Linear { out_features: 32, bias: true });
    spec.layers.push(sigmoid);
    let spec = spec.named("fc2", Op::Linear { out_features: 4, bias: true });
    let plan = analyze(&spec).unwrap();
    let report = plan.to_string();
    for step in plan.walk() {
        if let StepOp::FixedScale { reasons, factor } = &step.step.op {
            assert!(!reasons.is_empty(), "fixed ×{factor} without a reason:\n{report}");
        }
    }
    assert!(!report.contains("()"), "an empty reason:\n{report}");
    assert!(report.contains("sigmoid (unscaled!)"), "{report}");
    assert!(report.contains("the rows marked `(unscaled!)`"), "{report}");
    let ids = report.match_indices('#').filter(|(at, _)| report[at + 1..].starts_with(|c: char| c.is_ascii_digit()));
    assert_eq!(ids.count(), 0, "a layer id the table does not show:\n{report}");
}

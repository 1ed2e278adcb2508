//! Planning stays bounded at the sizes a declaration may reach: maps too large for the tables of
//! correlations between positions are planned without them (and the report and a warning say
//! so) instead of allocating without bound; smaller maps keep them.

use scalenet_calculus::{analyze, NetworkSpec, Op, Rule, Shape};

fn conv_pool_head(height: usize, width: usize) -> NetworkSpec {
    NetworkSpec::new(Shape::Image { channels: 1, height, width })
        .named("conv", Op::Conv2d { out_channels: 1, kernel: 3, stride: 1, padding: 1, bias: true, groups: 1 })
        .layer(Op::Relu)
        .layer(Op::GlobalAvgPool)
        .named("fc", Op::Linear { out_features: 2, bias: true })
}

/// A row of 2^31 - 1 positions (the element limit) would need a 32 GiB table of offsets; it is
/// planned as the paper plans it, with a warning that names the map and what to do.
#[test]
fn a_map_beyond_the_tables_is_planned_without_them_and_says_so() {
    let plan = analyze(&conv_pool_head(1, 2_147_483_647)).unwrap();
    assert!(!plan.positions_modelled);
    let conv = plan.step("conv").unwrap();
    assert_eq!(conv.coherence, None, "no correction can be computed");
    let warnings = plan.warnings();
    let warning = warnings.iter().find(|w| w.rule == Rule::PositionsNotModelled).expect("a warning");
    assert!(warning.message.contains("1x2147483647 map"), "{}", warning.message);
    assert!(plan
        .to_string()
        .contains("note: the correlations between positions and the image borders are not modelled"));
}

/// Maps whose tables fit keep their corrections: the global pool's coherent gradient makes the
/// convolution's correction differ from 1. (A 2048 x 2048 map, the largest square that fits,
/// takes seconds in a debug build: `scripts/planning_cost.sh` times it optimized.)
#[test]
fn maps_within_the_tables_keep_their_corrections() {
    for size in [8, 300] {
        let plan = analyze(&conv_pool_head(size, size)).unwrap();
        assert!(plan.positions_modelled, "{size}");
        assert!(plan.warnings().iter().all(|w| w.rule != Rule::PositionsNotModelled));
        let coherence = plan.step("conv").unwrap().coherence.unwrap();
        assert!((coherence - 1.0).abs() > 1e-3, "{size}: {coherence}");
    }
}

// Grouped and depthwise convolutions (ResNeXt, MobileNet): the weight is `(out, in / groups, k, k)`
// and the calculus's fans are per group.
use scalenet::network;

network! {
    pub struct MobileBlock {
        input: [8, 8, 8],
        depthwise: conv(8, kernel = 3, padding = 1, groups = 8),
        relu,
        pointwise: conv(16, kernel = 1),
        relu,
        grouped: conv(16, kernel = 3, padding = 1, groups = 4, bias = false),
        relu,
        global_avg_pool,
        fc: linear(10),
    }
}

fn main() {
    let plan = MobileBlock::plan();
    let depthwise = plan.step("depthwise").unwrap().weight().unwrap();
    assert_eq!(depthwise.shape, [8, 1, 3, 3]);
    assert_eq!((depthwise.geometry.fan_in, depthwise.geometry.fan_out), (1, 1));
    assert_eq!(plan.step("grouped").unwrap().weight().unwrap().shape, [16, 4, 3, 3]);
}

// An extra positional argument is read as the next named one (`conv(8, 3)` as `kernel = 3`), so
// the shape error of a later layer is reported in the same compile.
use scalenet::network;

network! {
    pub struct Net {
        input: [3, 16, 16],
        conv1: conv(8, 3),
        relu,
        avg_pool(3),
        flatten,
        fc: linear(10),
    }
}

fn main() {}

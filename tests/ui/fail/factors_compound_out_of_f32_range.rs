// No single factor is extreme, but together they take the values out of f32's range: the error
// is on the layer where that happens and says so.
use scalenet::network;

network! {
    pub struct Net {
        input: [4],
        scale(1e-3), scale(1e-3), scale(1e-3), scale(1e-3), scale(1e-3), scale(1e-3), scale(1e-3),
        scale(1e-3), scale(1e-3), scale(1e-3), scale(1e-3), scale(1e-3), scale(1e-3), scale(1e-3),
        fc: linear(2),
    }
}

fn main() {}

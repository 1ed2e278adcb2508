use scalenet::network;

network! {
    pub struct Net {
        input: [3, 16, 16],
        init: mirrored(fan_in),
        conv1: conv(7, kernel = 3, padding = 1),
        relu,
        avg_pool(2),
        flatten,
        fc: linear(10),
    }
}

fn main() {}

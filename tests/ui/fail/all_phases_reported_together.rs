use scalenet::network;

network! {
    pub struct Net {
        input: [3, 32, 32],
        frobnicate,
        fc2:,
        max_pool(2),
        conv(16, kernel = 3, stride = 2),
        sigmoid,
        flatten,
        linear(10),
    }
}

fn main() {}

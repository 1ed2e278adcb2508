use scalenet::network;

network! {
    pub struct Net {
        input: [64],
        init: mirrored,
        fc1: linear(100),
        leaky_relu(0.1),
        fc2: linear(10),
    }
}

fn main() {}

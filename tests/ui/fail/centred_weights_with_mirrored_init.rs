use scalenet::network;

network! {
    pub struct Net {
        input: [64],
        init: mirrored,
        centred_weights: true,
        fc1: linear(100),
        relu,
        fc2: linear(10),
    }
}

fn main() {}

use scalenet::network;

network! {
    pub struct Net {
        input: [64],
        init: mirrored,
        fc1: linear(100),
        relu,
        relu,
        fc2: linear(10),
    }
}

fn main() {}

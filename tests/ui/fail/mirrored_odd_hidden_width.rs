use scalenet::network;

network! {
    pub struct Net {
        input: [64],
        init: mirrored,
        fc1: linear(99),
        relu,
        fc2: linear(10),
    }
}

fn main() {}

use scalenet::network;

network! {
    pub struct Net {
        input: [4],
        fc1: linear(8),
        fc2:,
        linear(2),
    }
}

fn main() {}

use scalenet::network;

network! {
    pub struct Net {
        input: [16],
        fc: linear(4usize),
    }
}

fn main() {}

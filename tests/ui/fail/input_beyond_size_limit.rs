use scalenet::network;

network! {
    pub struct Net {
        input: [4294967296, 4294967296, 4294967296],
        flatten,
        linear(10),
    }
}

fn main() {}

use scalenet::network;

network! {
    pub struct Net {
        input: [4],
        dropout(0.99999999),
        linear(2),
    }
}

fn main() {}

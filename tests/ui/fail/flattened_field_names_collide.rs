use scalenet::network;

network! {
    pub struct Net {
        input: [4],
        a: residual(beta = 0.5) { c: linear(4) },
        a_main_c: linear(4),
    }
}

fn main() {}

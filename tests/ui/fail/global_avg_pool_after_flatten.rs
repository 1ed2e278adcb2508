use scalenet::network;

network! {
    pub struct Net {
        input: [8, 4, 4],
        flatten,
        global_avg_pool,
        linear(10),
    }
}

fn main() {}

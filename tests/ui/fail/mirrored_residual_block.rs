use scalenet::network;

network! {
    pub struct Net {
        input: [16, 8, 8],
        init: mirrored,
        conv1: conv(16, kernel = 3, padding = 1),
        block: residual(beta = 0.5) {
            relu,
            conv(16, kernel = 3, padding = 1),
        },
        relu,
        global_avg_pool,
        fc: linear(10),
    }
}

fn main() {}

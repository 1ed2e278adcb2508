//! Attributes on the struct reach every generated item: a network gated off by `cfg` leaves no
//! impls behind, and a lint allowed on the struct is allowed in its impls (here the calculus's
//! warning about a global-pool head, which this network keeps knowingly).
#![deny(deprecated)]
use scalenet::network;

network! {
    #[cfg(any())]
    pub struct GatedOff { input: [16], fc: linear(2) }
}

network! {
    #[cfg(all())]
    #[cfg_attr(all(), derive(Debug))]
    pub struct GatedOn { input: [16], fc: linear(2) }
}

fn is_debug<T: std::fmt::Debug>() {}

network! {
    /// Documentation reaches the struct.
    #[allow(deprecated)]
    pub struct KnowinglyPooled {
        input: [3, 16, 16],
        conv1: conv(16, kernel = 3, padding = 1),
        relu,
        global_avg_pool,
        fc: linear(10),
    }
}

fn main() {
    let _ = GatedOn::INPUT_SHAPE;
    is_debug::<GatedOn>(); // `cfg_attr` stays on the struct, where a derive belongs
    let _ = KnowinglyPooled::report;
}

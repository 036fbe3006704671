//! Apply: carrying a plan out on real machines, in dependency order.

pub mod wiring;

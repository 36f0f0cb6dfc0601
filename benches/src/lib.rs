//! Harnesses for Octet measurements: criterion benches of the distance kernels live in `benches/`.

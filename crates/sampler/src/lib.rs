//! zeta-sampler (under construction).

//! zeta-model (under construction).

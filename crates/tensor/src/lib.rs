//! zeta-tensor (under construction).

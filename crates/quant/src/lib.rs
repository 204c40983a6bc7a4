//! zeta-quant (under construction).

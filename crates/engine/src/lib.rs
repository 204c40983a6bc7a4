//! zeta-engine (under construction).

//! verify (to be written)

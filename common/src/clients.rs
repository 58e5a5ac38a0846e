//! clients (to be written)

//! transfer (to be written)

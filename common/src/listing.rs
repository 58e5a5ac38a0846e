//! listing (to be written)

//! (to be written)
pub struct S3Store;

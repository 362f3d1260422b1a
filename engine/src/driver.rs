//! The io_uring driver: worker processes, rings, splice. The only module with `unsafe`.
#![allow(unsafe_code)]

//! The fast CPU decoder (see [`decode`]).

pub mod decode;
mod lanes;

pub use decode::{
    DecodeOptions, decode_fast, decode_fast_into, decode_fast_into_with, decode_parallel, decode_parallel_into,
    decode_parallel_into_with,
};

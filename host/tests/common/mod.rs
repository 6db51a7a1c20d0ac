//! Helpers shared by the integration tests of `df11-host`.

// Each test crate compiles this module and uses only some of it.
#![allow(dead_code)]

use df11_host::decode::{self, DecodeOptions};
use df11_host::synth::SplitMix64;
use df11_host::{CompressedTensor, Error};

/// The default options on the calling thread only.
pub const ONE_THREAD: DecodeOptions = DecodeOptions { verify_crc: true, parallel: false };

/// [`decode::decode_into`] with `opts` on one thread and in parallel
/// (whatever `opts.parallel` says), into buffers of the right size.
pub fn decode_both(t: &CompressedTensor, opts: &DecodeOptions) -> [Result<Vec<u16>, Error>; 2] {
    let n = t.num_elements as usize;
    let (mut a, mut b) = (vec![0u16; n], vec![0u16; n]);
    [
        decode::decode_into(t, &mut a, &DecodeOptions { parallel: false, ..*opts }).map(|_| a),
        decode::decode_into(t, &mut b, &DecodeOptions { parallel: true, ..*opts }).map(|_| b),
    ]
}

/// `v` in an order drawn from `seed` (Fisher-Yates).
pub fn shuffled(mut v: Vec<u16>, seed: u64) -> Vec<u16> {
    let mut rng = SplitMix64::new(seed);
    for i in (1..v.len()).rev() {
        v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    v
}

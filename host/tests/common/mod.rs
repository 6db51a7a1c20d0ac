//! Helpers shared by the integration tests of `df11-host`.

use df11_host::fast::{self, DecodeOptions};
use df11_host::{CompressedTensor, Error};

/// Both fast decoders (one thread and parallel), into buffers of the right size.
pub fn fast_both(t: &CompressedTensor, opts: &DecodeOptions) -> [Result<Vec<u16>, Error>; 2] {
    let n = t.num_elements as usize;
    let (mut a, mut b) = (vec![0u16; n], vec![0u16; n]);
    [
        fast::decode_fast_into_with(t, &mut a, opts).map(|_| a),
        fast::decode_parallel_into_with(t, &mut b, opts).map(|_| b),
    ]
}

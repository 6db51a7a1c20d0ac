//! Helpers shared by the integration tests of `df11-host`.

// Each test crate compiles this module and uses only some of it.
#![allow(dead_code)]

use df11_host::decode::{self, DecodeOptions};
use df11_host::synth::SplitMix64;
use df11_host::{CompressedTensor, Error, decode_reference};

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

/// Fast and reference decoders judge a damaged tensor alike: both reject it,
/// or both return the same bits (only possible when the damage is invisible,
/// e.g. in a word of padding).
pub fn judge_alike(t: &CompressedTensor) {
    let reference = decode_reference(t);
    for verify_crc in [true, false] {
        for r in decode_both(t, &DecodeOptions { verify_crc, ..Default::default() }) {
            match (&reference, &r) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                // Without the CRC check the fast decoder may return bits the
                // reference rejects only by their checksum.
                (Err(Error::Checksum { .. }), Ok(_)) if !verify_crc => {}
                _ => panic!("reference {reference:?} but fast {r:?}"),
            }
        }
    }
}

/// Damages `t` in one of four ways (`kind`): a bit of a word flipped, a word
/// replaced, an offset replaced, or a raw byte changed, at `pos` (wrapped).
pub fn damage(t: &mut CompressedTensor, pos: usize, val: u32, kind: u8) {
    match kind {
        0 if !t.words.is_empty() => {
            let i = pos % t.words.len();
            t.words[i] ^= 1 << (val % 32);
        }
        1 if !t.words.is_empty() => {
            let i = pos % t.words.len();
            t.words[i] = val;
        }
        2 => {
            let i = pos % t.stream_offsets.len();
            t.stream_offsets[i] = val % (t.words.len() as u32 + 2);
        }
        _ if !t.sign_mantissa.is_empty() => {
            let i = pos % t.sign_mantissa.len();
            t.sign_mantissa[i] ^= val as u8 | 1;
        }
        _ => {}
    }
}

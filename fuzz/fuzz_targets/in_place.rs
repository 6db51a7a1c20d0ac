//! The in-place container paths against the strict parse on arbitrary bytes,
//! at every alignment: `decode_container_into`, `Runs` (one and two segments
//! a run) and `compare_container` give exactly what `TensorView::from_bytes`
//! then the decoder give, the same error or the same bits, with the CRC
//! check on and off. They defer the record CRC to the end of a one-pass
//! decode, so this is where a deferred check could change a verdict, or a
//! view of unaligned bytes read out of bounds.
#![no_main]

use df11_fuzz::fix_crcs;
use df11_host::decode::{Runs, compare_container, compare_view, decode_container_into, decode_view_into};
use df11_host::{DecodeOptions, Error, TensorView};
use libfuzzer_sys::fuzz_target;

const OPTS: [DecodeOptions; 2] =
    [DecodeOptions { verify_crc: true, parallel: false }, DecodeOptions { verify_crc: false, parallel: false }];

fn strict(bytes: &[u8], n: usize, opts: &DecodeOptions) -> Result<Vec<u16>, Error> {
    let v = TensorView::from_bytes(bytes)?;
    let mut out = vec![0u16; n];
    decode_view_into(&v, &mut out, opts).map(|()| out)
}

fn runs(bytes: &[u8], segs: usize, opts: &DecodeOptions) -> Result<Vec<u16>, Error> {
    let mut r = Runs::new(bytes, opts)?;
    let mut buf = vec![0u16; r.segment_elems() * segs];
    let mut out = Vec::new();
    loop {
        let n = r.next_into(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    r.finish()?;
    Ok(out)
}

fn check(bytes: &[u8]) {
    // A parsed view's element count is bounded by its sign+mantissa bytes,
    // so the buffers below are no larger than the input.
    let n = TensorView::from_bytes(bytes).map_or(0, |v| v.num_elements as usize);
    for opts in &OPTS {
        let want = strict(bytes, n, opts);
        let mut out = vec![0u16; n];
        let got = decode_container_into(bytes, &mut out, opts).map(|()| out);
        assert_eq!(got, want, "decode_container_into");
        for segs in [1, 2] {
            assert_eq!(runs(bytes, segs, opts), want, "Runs, {segs} segments a run");
        }
        let expected = match &want {
            Ok(bits) if n > 0 => {
                // One element changed: the compare must find it (or an error).
                let mut e = bits.clone();
                e[bytes.len() % n] ^= 1;
                e
            }
            Ok(bits) => bits.clone(),
            Err(_) => vec![0; n],
        };
        let strict_cmp = TensorView::from_bytes(bytes).and_then(|v| compare_view(&v, &expected, opts));
        assert_eq!(compare_container(bytes, &expected, opts), strict_cmp, "compare_container");
        if let Ok(bits) = &want {
            assert_eq!(compare_container(bytes, bits, opts), Ok(None), "compare with its own bits");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let fixed = fix_crcs(data);
    for input in [data, &fixed[..]] {
        // At each of the four alignments of a 4-byte word.
        for shift in 0..4 {
            let mut buf = vec![0u32; (input.len() + shift).div_ceil(4) + 1];
            let b = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut buf)[shift..shift + input.len()];
            b.copy_from_slice(input);
            check(b);
        }
        if fixed == data {
            break;
        }
    }
});

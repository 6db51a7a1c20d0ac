//! Helpers shared by the df11 fuzz targets.

use df11_host::container::data_crc;
use df11_host::{CompressedTensor, Error, decode_reference};

/// Copies `bytes` and rewrites every checksum the container format carries
/// (the header CRC and each record CRC whose record fits in the input), as far
/// as the structure can be followed.
///
/// Random mutations almost never keep a CRC32C valid, so without this the
/// fuzzer would only ever reach the checksum checks; targets run each input
/// both as is and fixed up.
pub fn fix_crcs(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    df11_host::container::reseal_crcs(&mut b);
    b
}

/// The reference decoder's verdict on a valid tensor's stream, ignoring
/// `data_crc`: the decoded bits, or the stream error. A data checksum
/// mismatch is resolved by decoding again with the computed CRC, which must
/// then succeed with the same bits; this lets targets compare decoders on
/// mutated streams, which would otherwise always fail the checksum.
pub fn reference_bits(t: &CompressedTensor) -> Result<Vec<u16>, Error> {
    match decode_reference(t) {
        Ok(bits) => {
            assert_eq!(data_crc(&bits), t.data_crc, "reference decode Ok with a CRC mismatch");
            Ok(bits)
        }
        Err(Error::Checksum { what: "data", computed, .. }) => {
            let mut fixed = t.clone();
            fixed.data_crc = computed;
            let bits = decode_reference(&fixed).expect("only the data CRC was wrong");
            assert_eq!(data_crc(&bits), computed);
            Ok(bits)
        }
        Err(e @ Error::CorruptStream { .. }) => Err(e),
        Err(e) => panic!("reference decode of a validated tensor failed with {e:?}"),
    }
}

//! Re-encoding a stored data set in another transfer syntax, where that loses nothing: between
//! the native (uncompressed) syntaxes, whose values stay exactly as stored. Pixel data is never
//! decompressed or compressed here. C-MOVE/C-GET sub-operations and WADO-RS both use it.

use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Implicit and Explicit VR Little Endian, Deflated Explicit VR Little Endian, and (retired,
/// still received) Explicit VR Big Endian.
pub const NATIVE_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
];

/// Whether a data set stored in `transfer_syntax` converts into the other native ones
/// without loss.
pub fn is_native(transfer_syntax: &str) -> bool {
    NATIVE_SYNTAXES.contains(&transfer_syntax)
}

/// The data set, stored in `from`, encoded in `to` (both native). CPU work on the whole data
/// set: call it on the blocking pool.
pub fn convert(data_set: &[u8], from: &str, to: &str) -> Result<Vec<u8>, String> {
    let (Some(source), Some(target)) = (
        TransferSyntaxRegistry.get(from),
        TransferSyntaxRegistry.get(to),
    ) else {
        return Err(format!("unknown transfer syntax {from} or {to}"));
    };
    let object = InMemDicomObject::read_dataset_with_ts(data_set, source)
        .map_err(|e| format!("cannot read the stored data set: {e}"))?;
    let mut out = Vec::with_capacity(data_set.len());
    object
        .write_dataset_with_ts(&mut out, target)
        .map_err(|e| format!("cannot encode in {to}: {e}"))?;
    Ok(out)
}

//! Command PDVs collected into one command set. A command set may span several PDVs (the
//! last one is marked last); real ones are a few hundred bytes, so a peer that keeps sending
//! command fragments without ever finishing is cut off at [`MAX_COMMAND`] instead of growing
//! our memory without bound.

/// Largest command set accepted (a C-MOVE with long UIDs and an Error Comment is < 1 KiB).
pub(crate) const MAX_COMMAND: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Collected {
    /// More fragments are expected.
    Partial,
    /// The whole command set.
    Complete(Vec<u8>),
    /// Longer than `MAX_COMMAND`: a protocol error.
    TooLong,
}

#[derive(Default)]
pub(crate) struct CommandPdvs {
    bytes: Vec<u8>,
}

impl CommandPdvs {
    pub fn push(&mut self, fragment: &[u8], is_last: bool) -> Collected {
        if self.bytes.len() + fragment.len() > MAX_COMMAND {
            self.bytes = Vec::new();
            return Collected::TooLong;
        }
        self.bytes.extend_from_slice(fragment);
        if is_last {
            Collected::Complete(std::mem::take(&mut self.bytes))
        } else {
            Collected::Partial
        }
    }
}

/// Robustness of what a peer controls: PDUs off the wire (dicom-ul's reader, as the server
/// uses it), command PDVs split anyhow, and command sets of any bytes. Nothing panics; what
/// is malformed is an error; what is well formed comes through unchanged.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::dimse::{encode_c_store_rq, Command};
    use dicom_ul::pdu::{read_pdu, write_pdu, PDataValue, PDataValueType, Pdu};
    use proptest::prelude::*;

    const MAX_PDU: u32 = 16 * 1024;

    /// A well-formed C-STORE-RQ command set for the given UIDs.
    fn store_command(class: &str, instance: &str, id: u16) -> Vec<u8> {
        encode_c_store_rq(id, class, instance)
    }

    fn uid() -> impl Strategy<Value = String> {
        "[1-9][0-9]{0,5}(\\.[0-9]{1,6}){1,8}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_bytes_decode_to_a_command_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Command::decode(&bytes);
        }

        #[test]
        fn mutated_commands_decode_to_a_command_or_an_error(
            class in uid(), instance in uid(), id in any::<u16>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = store_command(&class, &instance, id);
            for (at, value) in flips {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            let _ = Command::decode(&bytes);
            let cut = cut.index(bytes.len());
            let _ = Command::decode(&bytes[..cut]);
        }

        #[test]
        fn any_bytes_read_as_a_pdu_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read_pdu(&bytes[..], MAX_PDU, false);
            let _ = read_pdu(&bytes[..], MAX_PDU, true);
        }

        #[test]
        fn mutated_pdus_read_as_a_pdu_or_an_error(
            class in uid(), instance in uid(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let pdu = Pdu::PData { data: vec![PDataValue {
                presentation_context_id: 1,
                value_type: PDataValueType::Command,
                is_last: true,
                data: store_command(&class, &instance, 7),
            }]};
            let mut bytes = Vec::new();
            write_pdu(&mut bytes, &pdu).expect("encode");
            for (at, value) in flips {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            if let Ok(Some(Pdu::PData { data })) = read_pdu(&bytes[..], MAX_PDU, false) {
                let mut pdvs = CommandPdvs::default();
                for value in data {
                    if let Collected::Complete(command) = pdvs.push(&value.data, value.is_last) {
                        let _ = Command::decode(&command);
                    }
                }
            }
        }

        /// A command split into PDVs at arbitrary points, each PDV in its own P-DATA PDU, comes
        /// back whole and decodes to the same command.
        #[test]
        fn split_commands_are_reassembled_exactly(
            class in uid(), instance in uid(), id in any::<u16>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let command = store_command(&class, &instance, id);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(command.len())).collect();
            points.push(0);
            points.push(command.len());
            points.sort_unstable();
            points.dedup();
            let mut pdvs = CommandPdvs::default();
            let mut whole = None;
            for pair in points.windows(2) {
                let is_last = pair[1] == command.len();
                let pdu = Pdu::PData { data: vec![PDataValue {
                    presentation_context_id: 3,
                    value_type: PDataValueType::Command,
                    is_last,
                    data: command[pair[0]..pair[1]].to_vec(),
                }]};
                let mut wire = Vec::new();
                write_pdu(&mut wire, &pdu).expect("encode");
                let Ok(Some(Pdu::PData { data })) = read_pdu(&wire[..], MAX_PDU, true) else {
                    panic!("a P-DATA PDU we wrote must read back");
                };
                for value in data {
                    prop_assert_eq!(value.presentation_context_id, 3);
                    match pdvs.push(&value.data, value.is_last) {
                        Collected::Complete(bytes) => whole = Some(bytes),
                        Collected::Partial => {}
                        Collected::TooLong => panic!("a small command is never too long"),
                    }
                }
            }
            prop_assert_eq!(whole.as_deref(), Some(&command[..]));
            let decoded = Command::decode(&command).expect("decode");
            prop_assert_eq!(decoded.affected_sop_instance_uid, instance);
            prop_assert_eq!(decoded.affected_sop_class_uid, class);
            prop_assert_eq!(decoded.message_id, id);
            prop_assert!(decoded.has_data_set);
        }
    }

    #[test]
    fn endless_command_fragments_are_cut_off() {
        let mut pdvs = CommandPdvs::default();
        let fragment = vec![0u8; 16 * 1024];
        let mut outcomes = Vec::new();
        for _ in 0..5 {
            outcomes.push(pdvs.push(&fragment, false));
        }
        assert_eq!(
            outcomes[..4],
            [
                Collected::Partial,
                Collected::Partial,
                Collected::Partial,
                Collected::Partial
            ]
        );
        assert_eq!(outcomes[4], Collected::TooLong);
        assert_eq!(
            pdvs.push(b"x", true),
            Collected::Complete(b"x".to_vec()),
            "memory released"
        );
    }
}

//! A minimal C-STORE/C-ECHO SCU for tests that need what DCMTK cannot do: send a garbage
//! data set and keep using the association, read exact statuses and Error Comments, and
//! record which instances got success before the server is killed.

use dicom_object::meta::FileMetaTable;
use dicom_scp::dimse::{
    command_field, encode_c_cancel_rq, encode_c_echo_rq, encode_c_store_rq, encode_request, Command,
};
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};
use dicom_ul::ClientAssociation;
use std::net::TcpStream;
use std::path::Path;

pub struct Scu {
    association: ClientAssociation<TcpStream>,
    next_message_id: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub comment: Option<String>,
}

/// A Part-10 file split into what a C-STORE needs.
pub struct FileParts {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub data_set: Vec<u8>,
}

pub fn read_parts(path: &Path) -> FileParts {
    let bytes = std::fs::read(path).expect("read file");
    let offset = dicom_scp::store::data_set_offset(&bytes).expect("Part-10 file");
    let meta = FileMetaTable::from_reader(&bytes[128..offset]).expect("file meta");
    let clean = |s: &str| s.trim_end_matches('\0').to_string();
    FileParts {
        sop_class_uid: clean(meta.media_storage_sop_class_uid()),
        sop_instance_uid: clean(meta.media_storage_sop_instance_uid()),
        transfer_syntax: clean(meta.transfer_syntax()),
        data_set: bytes[offset..].to_vec(),
    }
}

impl Scu {
    /// Proposes one presentation context per `(abstract syntax, transfer syntax)` pair.
    pub fn connect(port: u16, calling_ae: &str, contexts: &[(&str, &str)]) -> Result<Scu, String> {
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(calling_ae)
            .called_ae_title("STRATA")
            .with_presentation_context("1.2.840.10008.1.1", vec!["1.2.840.10008.1.2"]);
        for (abstract_syntax, transfer_syntax) in contexts {
            options = options.with_presentation_context(*abstract_syntax, vec![*transfer_syntax]);
        }
        let association = options
            .establish(("127.0.0.1", port))
            .map_err(|e| e.to_string())?;
        Ok(Scu {
            association,
            next_message_id: 1,
        })
    }

    fn context_id(&self, abstract_syntax: &str, transfer_syntax: &str) -> u8 {
        self.association
            .presentation_contexts()
            .iter()
            .find(|pc| {
                pc.reason == PresentationContextResultReason::Acceptance
                    && pc.abstract_syntax.trim_end_matches('\0') == abstract_syntax
                    && pc.transfer_syntax.trim_end_matches('\0') == transfer_syntax
            })
            .unwrap_or_else(|| {
                panic!("no accepted context for {abstract_syntax} / {transfer_syntax}")
            })
            .id
    }

    pub fn echo(&mut self) -> Answer {
        let pc = self.context_id("1.2.840.10008.1.1", "1.2.840.10008.1.2");
        let id = self.message_id();
        self.send(pc, PDataValueType::Command, encode_c_echo_rq(id), true)
            .expect("send C-ECHO");
        self.try_read_answer().expect("C-ECHO response")
    }

    pub fn store_file(&mut self, path: &Path) -> Answer {
        let parts = read_parts(path);
        self.store(
            &parts.sop_class_uid,
            &parts.sop_instance_uid,
            &parts.transfer_syntax,
            &parts.data_set,
        )
    }

    pub fn store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        data_set: &[u8],
    ) -> Answer {
        self.try_store(sop_class, sop_instance, transfer_syntax, data_set)
            .expect("C-STORE exchange")
    }

    /// Like `store`, but a broken connection is an `Err` instead of a panic.
    pub fn try_store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        data_set: &[u8],
    ) -> Result<Answer, String> {
        let pc = self.context_id(sop_class, transfer_syntax);
        let id = self.message_id();
        self.send(
            pc,
            PDataValueType::Command,
            encode_c_store_rq(id, sop_class, sop_instance),
            true,
        )?;
        let chunk = (self.association.acceptor_max_pdu_length() as usize)
            .saturating_sub(64)
            .max(1024);
        let mut pieces = data_set.chunks(chunk).peekable();
        if pieces.peek().is_none() {
            self.send(pc, PDataValueType::Data, Vec::new(), true)?;
        }
        while let Some(piece) = pieces.next() {
            let last = pieces.peek().is_none();
            self.send(pc, PDataValueType::Data, piece.to_vec(), last)?;
        }
        self.try_read_answer()
    }

    /// Sends a C-FIND with `identifier` and, right behind it, a C-CANCEL; returns how many
    /// pending answers arrived and the final status.
    pub fn find_and_cancel(&mut self, model: &str, identifier: &[u8]) -> (usize, u16) {
        let pc = self.context_id(model, "1.2.840.10008.1.2.1");
        let id = self.message_id();
        self.send(
            pc,
            PDataValueType::Command,
            encode_request(command_field::C_FIND_RQ, id, model, None, true),
            true,
        )
        .expect("send");
        self.send(pc, PDataValueType::Data, identifier.to_vec(), true)
            .expect("send");
        self.send(pc, PDataValueType::Command, encode_c_cancel_rq(id), true)
            .expect("send");
        let mut pending = 0;
        loop {
            let answer = self.try_read_answer().expect("answer");
            if answer.status == 0xFF00 || answer.status == 0xFF01 {
                pending += 1;
                self.skip_data_set();
            } else {
                return (pending, answer.status);
            }
        }
    }

    fn skip_data_set(&mut self) {
        loop {
            match self.association.receive().expect("receive") {
                Pdu::PData { data } => {
                    if data
                        .iter()
                        .any(|v| v.value_type == PDataValueType::Data && v.is_last)
                    {
                        return;
                    }
                }
                other => panic!("unexpected PDU: {other:?}"),
            }
        }
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1);
        id
    }

    fn send(
        &mut self,
        pc: u8,
        value_type: PDataValueType,
        data: Vec<u8>,
        is_last: bool,
    ) -> Result<(), String> {
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type,
                is_last,
                data,
            }],
        };
        self.association.send(&pdu).map_err(|e| e.to_string())
    }

    fn try_read_answer(&mut self) -> Result<Answer, String> {
        let mut command = Vec::new();
        loop {
            match self.association.receive().map_err(|e| e.to_string())? {
                Pdu::PData { data } => {
                    for value in data {
                        command.extend_from_slice(&value.data);
                        if value.is_last {
                            let decoded = Command::decode(&command).map_err(|e| e.to_string())?;
                            let status = decoded.status.ok_or("response without status")?;
                            return Ok(Answer {
                                status,
                                comment: decoded.error_comment,
                            });
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unexpected PDU while waiting for a response: {other:?}"
                    ))
                }
            }
        }
    }

    pub fn release(self) {
        let _ = self.association.release();
    }
}

/// Sends an A-ASSOCIATE-RQ (Verification) from a socket bound to `source` and returns the PDU
/// the server answers with: for checking the AE policy from a second "host" (127.0.0.2)
/// exactly, without a client library's own interpretation of the answer.
pub fn associate_from(source: &str, port: u16, calling_ae: &str) -> Pdu {
    use dicom_ul::pdu::{
        read_pdu, write_pdu, AssociationRQ, PresentationContextProposed, UserVariableItem,
    };
    use std::io::{Read, Write};
    let socket = socket2_bound(source, port);
    let request = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling_ae.into(),
        called_ae_title: "STRATA".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.1.1".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    });
    let mut bytes = Vec::new();
    write_pdu(&mut bytes, &request).expect("encode A-ASSOCIATE-RQ");
    let mut stream = socket;
    stream.write_all(&bytes).expect("send A-ASSOCIATE-RQ");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(pdu) = read_pdu(&received[..], 1 << 20, false).expect("decodable answer") {
            return pdu;
        }
        let n = stream.read(&mut buffer).expect("read answer");
        assert!(n > 0, "connection closed before an answer");
        received.extend_from_slice(&buffer[..n]);
    }
}

/// A TCP connection to 127.0.0.1:`port` from `source` (std has no bind-before-connect, so a
/// private tokio runtime on its own thread does the connect).
pub fn socket2_bound(source: &str, port: u16) -> std::net::TcpStream {
    let source: std::net::SocketAddr = format!("{source}:0").parse().expect("address");
    let stream = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(source).expect("bind source address");
            let stream = socket
                .connect(([127, 0, 0, 1], port).into())
                .await
                .expect("connect");
            stream.into_std().expect("std stream")
        })
    })
    .join()
    .expect("connect thread");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    stream
}

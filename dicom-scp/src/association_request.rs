//! The first PDU of a connection, inspected in the kernel's receive buffer before dicom-ul
//! reads it: nothing is allocated or parsed until the bytes are there, garbage and oversized
//! requests are closed at once, and the AE titles are known from the fixed part of the
//! A-ASSOCIATE-RQ (its first 74 bytes) so that a refused caller is answered before the rest of
//! its request is read.
//!
//! dicom-ul's `establish_async` takes the socket itself and reads the request from it, so this
//! module only peeks (`MSG_PEEK`, `FIONREAD`): the bytes stay where dicom-ul will find them.
//! Waiting uses the socket's readiness (tokio's `try_io` clears it only when no new data
//! arrived in between), so a connection that trickles bytes costs no polling.

use dicom_ul::pdu::{
    write_pdu, AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceUserReason, AssociationRJSource, Pdu,
};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// PDU type of A-ASSOCIATE-RQ (PS3.8 §9.3.2).
const A_ASSOCIATE_RQ: u8 = 0x01;
/// PDU header: type, reserved, 4-byte length.
const HEADER: usize = 6;
/// Header + protocol version + reserved + called AE + calling AE + 32 reserved bytes.
const FIXED_PART: usize = HEADER + 2 + 2 + 16 + 16 + 32;
/// Once this much of a request has arrived it is handed to dicom-ul even if incomplete: the
/// rest may not fit the TCP receive window while nobody reads. Real requests are smaller
/// (128 presentation contexts with three transfer syntaxes each are about 20 KB).
const HAND_OVER_AT: u64 = 16 * 1024;

/// What the start of a connection turned out to be.
pub(crate) enum RequestStart {
    /// An A-ASSOCIATE-RQ of acceptable length whose fixed part (and all of it, or its first
    /// `HAND_OVER_AT` bytes) has arrived.
    Request {
        called_ae: String,
        calling_ae: String,
    },
    /// The peer closed before sending a complete request header.
    Closed,
    /// Not an A-ASSOCIATE-RQ, or one longer than `max_length`.
    Invalid(&'static str),
}

/// Waits, without consuming anything, until the request is there. The caller bounds the wait
/// with the ARTIM timer.
pub(crate) async fn inspect(socket: &TcpStream, max_length: u32) -> io::Result<RequestStart> {
    let mut fixed = [0u8; FIXED_PART];
    if peek_at_least(socket, &mut fixed[..HEADER]).await? < HEADER {
        return Ok(RequestStart::Closed);
    }
    if fixed[0] != A_ASSOCIATE_RQ {
        return Ok(RequestStart::Invalid("first PDU is not an A-ASSOCIATE-RQ"));
    }
    let length = u32::from_be_bytes([fixed[2], fixed[3], fixed[4], fixed[5]]);
    if length > max_length {
        return Ok(RequestStart::Invalid(
            "A-ASSOCIATE-RQ longer than dicom.max_pdu",
        ));
    }
    if (length as usize) < FIXED_PART - HEADER {
        return Ok(RequestStart::Invalid(
            "A-ASSOCIATE-RQ shorter than its fixed part",
        ));
    }
    if peek_at_least(socket, &mut fixed).await? < FIXED_PART {
        return Ok(RequestStart::Closed);
    }
    let whole = (HEADER as u64 + u64::from(length)).min(HAND_OVER_AT);
    if !wait_for_bytes(socket, whole).await? {
        return Ok(RequestStart::Closed);
    }
    Ok(RequestStart::Request {
        called_ae: ae_title(&fixed[10..26]),
        calling_ae: ae_title(&fixed[26..42]),
    })
}

fn ae_title(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// Fills `buffer` from the receive buffer without consuming; returns how much was there when
/// it was full or the peer closed.
async fn peek_at_least(socket: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    let want = buffer.len();
    let mut seen = 0;
    let full = until_ready(socket, || {
        let (got, _) = rustix::net::recv(socket, &mut *buffer, rustix::net::RecvFlags::PEEK)?;
        seen = got;
        Ok((got >= want).then_some(got))
    })
    .await?;
    Ok(full.unwrap_or(seen))
}

/// Waits until `bytes` are readable; `false` if the peer closed before that.
async fn wait_for_bytes(socket: &TcpStream, bytes: u64) -> io::Result<bool> {
    let arrived = until_ready(socket, || {
        let available = rustix::io::ioctl_fionread(socket)?;
        Ok((available >= bytes).then_some(()))
    })
    .await?;
    Ok(arrived.is_some())
}

/// Runs `check` whenever the socket becomes readable until it returns a value, or `None` once
/// the peer has closed its side and `check` still has no value (no more bytes will come).
/// `check` answering `None` means "not yet": the readiness is cleared and the next arrival of
/// data (or the peer's FIN) wakes us again.
async fn until_ready<T>(
    socket: &TcpStream,
    mut check: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    loop {
        // Taken before the check: a FIN seen here comes after every byte the check will see.
        let ready = socket.ready(Interest::READABLE).await?;
        let attempt = socket.try_io(Interest::READABLE, || {
            check()?.ok_or_else(|| io::ErrorKind::WouldBlock.into())
        });
        match attempt {
            Ok(value) => return Ok(Some(value)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if ready.is_read_closed() {
                    return Ok(None);
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// Answers a refused caller with an A-ASSOCIATE-RJ (permanent, service user) ourselves, as
/// dicom-ul would, without reading the rest of its request.
pub(crate) async fn reject(socket: &mut TcpStream, reason: AssociationRJServiceUserReason) {
    let pdu = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Permanent,
        source: AssociationRJSource::ServiceUser(reason),
    });
    send_pdu(socket, &pdu).await;
}

/// A-ABORT from the service provider for a connection that did not start with a usable
/// A-ASSOCIATE-RQ (PS3.8 state Sta2: any other PDU is answered with A-ABORT).
pub(crate) async fn abort(socket: &mut TcpStream) {
    let pdu = Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPdu),
    };
    send_pdu(socket, &pdu).await;
}

async fn send_pdu(socket: &mut TcpStream, pdu: &Pdu) {
    let mut bytes = Vec::with_capacity(16);
    if write_pdu(&mut bytes, pdu).is_ok() {
        // A peer that does not read its answer is dropped by the caller's ARTIM bound.
        let _ = socket.write_all(&bytes).await;
    }
}

/// After our last PDU: discard whatever still arrives until the peer closes (the ARTIM wait of
/// PS3.8 state Sta13). The caller bounds it with the ARTIM timer.
pub(crate) async fn drain_until_closed(socket: &mut TcpStream) {
    let mut buffer = [0u8; 1024];
    while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
}

/// Closes a connection we give up on. Unread bytes are read and dropped first: closing a
/// socket with data still in its receive buffer makes the kernel send a reset instead of an
/// orderly FIN, and the peer should see a plain end of stream.
pub(crate) fn close(socket: TcpStream) {
    let mut buffer = [0u8; 4096];
    // Bounded: a peer still pushing data gets its reset after 64 KiB.
    for _ in 0..16 {
        // Straight to the kernel: tokio's `try_read` trusts its cached readiness, which may
        // not yet know about bytes that arrived.
        match rustix::net::recv(&socket, &mut buffer[..], rustix::net::RecvFlags::DONTWAIT) {
            Ok((n, _)) if n > 0 => continue,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let client = TcpStream::connect(address).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    fn request(calling: &str, extra: usize) -> Vec<u8> {
        let mut pdu = vec![A_ASSOCIATE_RQ, 0];
        let length = (FIXED_PART - HEADER + extra) as u32;
        pdu.extend_from_slice(&length.to_be_bytes());
        pdu.extend_from_slice(&[0, 1, 0, 0]);
        pdu.extend_from_slice(format!("{:<16}", "STRATA").as_bytes());
        pdu.extend_from_slice(format!("{calling:<16}").as_bytes());
        pdu.extend_from_slice(&[0u8; 32]);
        pdu.extend(std::iter::repeat_n(0x50u8, extra));
        pdu
    }

    #[tokio::test]
    async fn waits_for_the_whole_request_and_leaves_it_unread() {
        let (mut client, server) = pair().await;
        let bytes = request("CT1", 300);
        client.write_all(&bytes[..40]).await.expect("first part");
        let inspecting = tokio::spawn(async move {
            let start = inspect(&server, 65536).await;
            (start, server)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!inspecting.is_finished(), "a partial request is not enough");
        client
            .write_all(&bytes[40..200])
            .await
            .expect("second part");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !inspecting.is_finished(),
            "the fixed part alone is not enough"
        );
        client.write_all(&bytes[200..]).await.expect("rest");
        let (start, mut server) = tokio::time::timeout(Duration::from_secs(5), inspecting)
            .await
            .expect("finishes once complete")
            .expect("task");
        match start.expect("inspect") {
            RequestStart::Request {
                called_ae,
                calling_ae,
            } => {
                assert_eq!(called_ae, "STRATA");
                assert_eq!(calling_ae, "CT1");
            }
            _ => panic!("expected a request"),
        }
        let mut unread = vec![0u8; bytes.len()];
        server.read_exact(&mut unread).await.expect("still there");
        assert_eq!(unread, bytes);
    }

    /// `inspect` must decide these at once; a hang fails the test instead of stalling it.
    async fn inspect_soon(server: &TcpStream) -> RequestStart {
        tokio::time::timeout(Duration::from_secs(5), inspect(server, 65536))
            .await
            .expect("decided without waiting for a timer")
            .expect("inspect")
    }

    #[tokio::test]
    async fn garbage_oversize_and_early_close_are_told_apart() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.expect("send");
        assert!(matches!(
            inspect_soon(&server).await,
            RequestStart::Invalid(_)
        ));

        let (mut client, server) = pair().await;
        let mut huge = request("CT1", 0);
        huge[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        client.write_all(&huge).await.expect("send");
        assert!(matches!(
            inspect_soon(&server).await,
            RequestStart::Invalid(_)
        ));

        let (mut client, server) = pair().await;
        client
            .write_all(&request("CT1", 100)[..80])
            .await
            .expect("send");
        drop(client);
        assert!(matches!(inspect_soon(&server).await, RequestStart::Closed));
    }
}

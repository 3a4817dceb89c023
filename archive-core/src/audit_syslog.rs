//! Audit events sent to an IHE ATNA audit record repository: DICOM PS3.15 A.5 audit messages
//! (XML) in RFC 5424 syslog messages over UDP (PS3.15 A.7, RFC 5426): PRI 85 (facility 10,
//! security; severity 5, or 4 for failures), MSGID `DICOM+RFC3881`.
//!
//! UDP is fire-and-forget: a repository that is down loses the messages sent meanwhile, which
//! is why the index's `audit_event` table, not syslog, is the trail of record.

use crate::audit::{AuditAction, AuditOutcome, AuditSink, NewAuditEvent};
use std::net::UdpSocket;

/// Sends each event as one datagram to `host:port`.
pub struct UdpSyslog {
    socket: UdpSocket,
    hostname: String,
}

impl UdpSyslog {
    /// `address` is `host:port` (the `audit.syslog` setting without its `udp://`).
    pub fn connect(address: &str) -> std::io::Result<UdpSyslog> {
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        socket.connect(address)?;
        // The writer task must never block on the network: a full send buffer drops.
        socket.set_nonblocking(true)?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|_| "-".into());
        Ok(UdpSyslog { socket, hostname })
    }
}

impl AuditSink for UdpSyslog {
    fn send(&self, node: &str, at: i64, event: &NewAuditEvent) {
        let message = syslog_message(&self.hostname, node, at, event);
        if let Err(error) = self.socket.send(message.as_bytes()) {
            tracing::debug!(%error, "audit syslog message not sent");
        }
    }
}

/// One RFC 5424 message carrying the event's audit message XML.
pub fn syslog_message(hostname: &str, node: &str, at: i64, event: &NewAuditEvent) -> String {
    let severity = match event.outcome {
        AuditOutcome::Success => 5,
        AuditOutcome::Failure => 4,
    };
    format!(
        "<{}>1 {} {} strata {} DICOM+RFC3881 - {}",
        10 * 8 + severity,
        timestamp(at),
        nil_if_empty(hostname),
        std::process::id(),
        audit_message_xml(node, at, event)
    )
}

fn nil_if_empty(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

fn timestamp(at: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// (EventID code, its meaning, EventActionCode) for each action (PS3.15 A.5.3, CID 400).
fn event_id(action: AuditAction) -> (&'static str, &'static str, &'static str) {
    match action {
        AuditAction::Association => ("110122", "Login", "E"),
        AuditAction::Login => ("110114", "User Authentication", "E"),
        AuditAction::Store => ("110104", "DICOM Instances Transferred", "C"),
        AuditAction::Restore => ("110104", "DICOM Instances Transferred", "C"),
        AuditAction::Query => ("110112", "Query", "E"),
        AuditAction::Retrieve => ("110104", "DICOM Instances Transferred", "R"),
        AuditAction::DicomWeb => ("110103", "DICOM Instances Accessed", "R"),
        AuditAction::Delete => ("110105", "DICOM Study Deleted", "D"),
        AuditAction::Api => ("110100", "Application Activity", "E"),
        AuditAction::Config => ("110113", "Security Alert", "E"),
        // A stored object no longer as written: an integrity alert.
        AuditAction::Fixity => ("110113", "Security Alert", "E"),
    }
}

/// The DICOM audit message (PS3.15 A.5.1) for one event.
pub fn audit_message_xml(node: &str, at: i64, event: &NewAuditEvent) -> String {
    let (code, meaning, action_code) = event_id(event.action);
    let outcome = match event.outcome {
        AuditOutcome::Success => "0",
        AuditOutcome::Failure => "4",
    };
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>\
         <EventIdentification EventActionCode=\"{action_code}\" EventDateTime=\"{}\" \
         EventOutcomeIndicator=\"{outcome}\">\
         <EventID csd-code=\"{code}\" codeSystemName=\"DCM\" originalText=\"{meaning}\"/>",
        timestamp(at)
    );
    if !event.detail.is_empty() {
        xml.push_str(&format!(
            "<EventOutcomeDescription>{}</EventOutcomeDescription>",
            escape(&event.detail)
        ));
    }
    xml.push_str("</EventIdentification>");
    if !event.actor.is_empty() {
        xml.push_str(&format!(
            "<ActiveParticipant UserID=\"{}\" UserIsRequestor=\"true\"{}/>",
            escape(&event.actor),
            if event.peer.is_empty() {
                String::new()
            } else {
                format!(
                    " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"2\"",
                    escape(&event.peer)
                )
            }
        ));
    }
    xml.push_str(&format!(
        "<ActiveParticipant UserID=\"strata\" AlternativeUserID=\"{}\" UserIsRequestor=\"false\"/>\
         <AuditSourceIdentification AuditSourceID=\"{}\"/>",
        std::process::id(),
        escape(node)
    ));
    if !event.study_uid.is_empty() {
        xml.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" \
             ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">\
             <ParticipantObjectIDTypeCode csd-code=\"110180\" codeSystemName=\"DCM\" \
             originalText=\"Study Instance UID\"/></ParticipantObjectIdentification>",
            escape(&event.study_uid)
        ));
    }
    if !event.patient_id.is_empty() {
        xml.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" \
             ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\">\
             <ParticipantObjectIDTypeCode csd-code=\"2\" codeSystemName=\"RFC-3881\" \
             originalText=\"Patient Number\"/></ParticipantObjectIdentification>",
            escape(&event.patient_id)
        ));
    }
    xml.push_str("</AuditMessage>");
    xml
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // XML 1.0 has no way to write most control characters: drop them.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_syslog_header_and_escaped_xml() {
        let event = NewAuditEvent::new(AuditAction::Store, AuditOutcome::Failure, "CT<1>")
            .peer("10.0.0.7")
            .study("1.2.3")
            .patient("P&1")
            .detail("2 stored, 1 failed");
        let message = syslog_message("host", "node-a", 1_700_000_000_123, &event);
        assert!(
            message.starts_with("<84>1 2023-11-14T22:13:20.123Z host strata "),
            "{message}"
        );
        assert!(message.contains(" DICOM+RFC3881 - <?xml"));
        assert!(message.contains("UserID=\"CT&lt;1&gt;\""));
        assert!(message.contains("ParticipantObjectID=\"P&amp;1\""));
        assert!(message.contains("csd-code=\"110104\""));
        assert!(message.contains("EventActionCode=\"C\""));
        assert!(message.contains("EventOutcomeIndicator=\"4\""));
        assert!(message.contains("AuditSourceID=\"node-a\""));
        assert!(message.ends_with("</AuditMessage>"));
    }

    #[test]
    fn control_characters_are_dropped() {
        assert_eq!(escape("a\u{1}b\tc"), "ab\tc");
    }
}

//! Email over SMTP with lettre's tokio transport.
//!
//! - `starttls = true` (default): the connection must be upgraded with STARTTLS before
//!   anything else is sent (`Tls::Required`); a server that does not offer it fails the
//!   delivery. Certificates are checked against the system's roots unless
//!   `accept_invalid_certs`.
//! - `starttls = false`: plain SMTP, no TLS.
//! - With `username`/`password`: AUTH PLAIN or LOGIN, whichever the server offers.
//!
//! One message per notification to all `to` addresses: subject
//! `[FIRING] <rule> (<instance>)` (or `[RESOLVED] …`), a `text/plain` UTF-8 body with the
//! value, threshold, severity, times, annotations, labels and the link to the source.
//! SMTP 4xx replies and connection errors are retried; 5xx replies (e.g. 535
//! authentication failed, 550 unknown recipient) and TLS errors are not.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::error::SenderError;
use super::http::chain;
use super::retry::{AttemptResult, Failure};
use super::text::{number, one_line, state_word, time, title};
use super::{EmailConfig, Notification, NotifyState};

pub(crate) struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    /// Builds the transport (no connection yet: one is opened per message).
    pub(crate) fn new(config: &EmailConfig, timeout: Duration) -> Result<Email, SenderError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| SenderError::From(e.to_string()))?;
        let to = config
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>().map_err(|e| SenderError::To {
                    address: a.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = if config.starttls {
            let params = TlsParameters::builder(config.host.clone())
                .dangerous_accept_invalid_certs(config.accept_invalid_certs)
                .build_rustls()
                .map_err(|e| SenderError::Tls(chain(&e)))?;
            Tls::Required(params)
        } else {
            Tls::None
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let (Some(u), Some(p)) = (&config.username, &config.password) {
            builder = builder
                .credentials(Credentials::new(u.clone(), p.expose().to_string()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(Email {
            transport: builder.build(),
            from,
            to,
        })
    }

    /// The message for `n`; built once per notification, sent by every attempt.
    pub(crate) fn message(&self, n: &Notification) -> Result<Message, SenderError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(email_subject(n))
            .message_id(None)
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            b = b.to(t.clone());
        }
        b.body(email_body(n))
            .map_err(|e| SenderError::Message(e.to_string()))
    }

    pub(crate) async fn attempt(&self, msg: &Message) -> AttemptResult {
        match self.transport.send(msg.clone()).await {
            Ok(resp) => Ok(Some(u16::from(resp.code()))),
            Err(e) => Err(classify(&e)),
        }
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> Failure {
    let status = e.status().map(u16::from);
    let message = format!("SMTP {}", chain(e));
    if e.is_transient() {
        return Failure::retryable(message, status);
    }
    if e.is_permanent() || e.is_tls() || e.is_client() || is_tls_failure(e) {
        return Failure::permanent(message, status);
    }
    // Connection, network, timeouts, unparsable responses: the next attempt may work.
    Failure::retryable(message, status)
}

/// A failed TLS handshake (untrusted certificate, wrong name, no common protocol), which
/// lettre reports as a connection error: tokio-rustls wraps rustls' errors in an
/// `io::Error` of kind `InvalidData`. Retrying cannot fix it.
fn is_tls_failure(e: &lettre::transport::smtp::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::InvalidData {
                return true;
            }
        }
        if err.to_string().contains("invalid peer certificate") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// `[FIRING] <rule> (<instance>)`.
pub fn email_subject(n: &Notification) -> String {
    title(n)
}

/// The plain-text body.
pub fn email_body(n: &Notification) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<12}{v}\n"));
    let headline = match (n.state, n.repeat) {
        (NotifyState::Firing, true) => "FIRING (reminder: still firing)".to_string(),
        _ => state_word(n).to_string(),
    };
    line(
        "Alert:",
        &format!("{} is {headline}", one_line(&n.rule_name)),
    );
    if !n.instance.is_empty() {
        line("Instance:", &one_line(&n.instance));
    }
    line("Severity:", &one_line(&n.severity));
    if let Some(v) = n.value {
        line("Value:", &number(v));
    }
    if let Some(t) = n.threshold {
        line("Threshold:", &number(t));
    }
    line("Started:", &time(&n.starts_at));
    if let Some(end) = &n.ends_at {
        line("Ended:", &time(end));
    }
    if !n.generator_url.is_empty() {
        line("Source:", &n.generator_url);
    }
    line("Rule id:", &n.rule_id);
    for key in ["summary", "description"] {
        if let Some(a) = n.annotations.get(key).filter(|a| !a.trim().is_empty()) {
            out.push_str(&format!("\n{}:\n{a}\n", capitalize(key)));
        }
    }
    let others: Vec<_> = n
        .annotations
        .iter()
        .filter(|(k, _)| k.as_str() != "summary" && k.as_str() != "description")
        .collect();
    if !others.is_empty() {
        out.push_str("\nAnnotations:\n");
        for (k, v) in others {
            out.push_str(&format!("  {k} = {}\n", one_line(v)));
        }
    }
    if !n.labels.is_empty() {
        out.push_str("\nLabels:\n");
        for (k, v) in &n.labels {
            out.push_str(&format!("  {k} = {v}\n"));
        }
    }
    out.push_str("\n-- \nSent by Mongo Pulse (mongopulsed).\n");
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn subject_and_body() {
        let n = Notification {
            rule_id: "r1".into(),
            rule_name: "Errors\nhigh".into(),
            instance: "country=FR".into(),
            state: NotifyState::Firing,
            severity: "critical".into(),
            labels: BTreeMap::from([("alertname".into(), "Errors".into())]),
            annotations: BTreeMap::from([("summary".into(), "Too many".into())]),
            value: Some(3.2),
            threshold: Some(3.0),
            starts_at: chrono::DateTime::from_timestamp(1_733_754_615, 0).unwrap(),
            ends_at: None,
            generator_url: "http://g/x".into(),
            repeat: false,
        };
        assert_eq!(email_subject(&n), "[FIRING] Errors high (country=FR)");
        let b = email_body(&n);
        assert!(b.contains("Value:      3.2\n"), "{b}");
        assert!(b.contains("Threshold:  3\n"), "{b}");
        assert!(b.contains("Started:    2024-12-09T14:30:15.000Z"), "{b}");
    }
}

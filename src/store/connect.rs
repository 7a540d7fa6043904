//! Building a client from a URI, and turning driver errors into advice.

use std::time::Duration;

use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, Tls, TlsOptions};
use mongodb::Client;
use thiserror::Error;

use super::Redactor;

/// Why MongoDB could not be used. Every message names the hosts, never the password.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConnectError {
    #[error("the connection URI is not valid: {reason}. Expected a form like mongodb://user:password@host:27017/?replicaSet=rs0")]
    InvalidUri { reason: String },

    #[error("could not reach MongoDB at {hosts}: {reason}. Check the host name and port, that MongoDB is running, and that this machine may connect to it")]
    Unreachable { hosts: String, reason: String },

    #[error("MongoDB at {hosts} rejected the credentials{user}: {reason}. Check the user name, the password and authSource in the connection URI")]
    Authentication {
        hosts: String,
        user: String,
        reason: String,
    },

    #[error("MongoDB at {hosts} did not answer within {seconds:.1} s. Check that the host is reachable, or raise the timeout")]
    Timeout { hosts: String, seconds: f64 },

    #[error("MongoDB at {hosts} refused the request: {reason}")]
    Server { hosts: String, reason: String },
}

/// TLS settings given beside the URI (the data source's TLS options). They
/// add to what the URI says; a URI with `tls=true` needs none of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientTls {
    pub enabled: bool,
    pub ca_file: Option<String>,
    pub cert_key_file: Option<String>,
    pub cert_key_password: Option<String>,
    pub allow_invalid_certificates: bool,
}

impl ClientTls {
    fn requested(&self) -> bool {
        self.enabled
            || self.ca_file.is_some()
            || self.cert_key_file.is_some()
            || self.allow_invalid_certificates
    }
}

/// Parses `uri` and builds a client whose server selection and connection
/// attempts give up after `timeout`. Creating the client does not connect.
pub async fn build_client(
    uri: &str,
    app_name: &str,
    timeout: Duration,
) -> Result<Client, ConnectError> {
    build_client_with_tls(uri, app_name, timeout, &ClientTls::default()).await
}

pub async fn build_client_with_tls(
    uri: &str,
    app_name: &str,
    timeout: Duration,
    tls: &ClientTls,
) -> Result<Client, ConnectError> {
    let redactor = Redactor::for_uri(uri);
    // An SRV URI resolves DNS while parsing, so parsing needs the bound too.
    let parsed = tokio::time::timeout(timeout, ClientOptions::parse(uri))
        .await
        .map_err(|_| ConnectError::Timeout {
            hosts: redactor.hosts().to_string(),
            seconds: timeout.as_secs_f64(),
        })?;
    let mut options = parsed.map_err(|e| ConnectError::InvalidUri {
        reason: redactor.clean(&driver_message(&e)),
    })?;
    options.app_name.get_or_insert_with(|| app_name.to_string());
    // A little under the caller's bound, so the driver's own explanation
    // ("connection refused", "authentication failed") arrives before the bound does.
    let driver_bound = timeout.mul_f64(0.85);
    options.server_selection_timeout = Some(driver_bound);
    options.connect_timeout = Some(driver_bound);
    if tls.requested() {
        let mut t = match options.tls.take() {
            Some(Tls::Enabled(t)) => t,
            _ => TlsOptions::default(),
        };
        if let Some(ca) = &tls.ca_file {
            t.ca_file_path = Some(ca.into());
        }
        if let Some(key) = &tls.cert_key_file {
            t.cert_key_file_path = Some(key.into());
        }
        if let Some(p) = &tls.cert_key_password {
            t.tls_certificate_key_file_password = Some(p.as_bytes().to_vec());
        }
        if tls.allow_invalid_certificates {
            t.allow_invalid_certificates = Some(true);
        }
        options.tls = Some(Tls::Enabled(t));
    }
    Client::with_options(options).map_err(|e| ConnectError::InvalidUri {
        reason: redactor.clean(&driver_message(&e)),
    })
}

/// Maps a driver error met while talking to the server described by `redactor`.
pub fn classify_error(error: &mongodb::error::Error, redactor: &Redactor) -> ConnectError {
    let hosts = redactor.hosts().to_string();
    let reason = redactor.clean(&driver_message(error));
    let user = redactor
        .user()
        .map(|u| format!(" of user '{u}'"))
        .unwrap_or_default();
    let looks_like_auth = reason.contains("Authentication failed")
        || reason.contains("AuthenticationFailed")
        || reason.contains("SCRAM");
    match error.kind.as_ref() {
        ErrorKind::Authentication { .. } => ConnectError::Authentication {
            hosts,
            user,
            reason,
        },
        ErrorKind::Command(c) if c.code == 18 => ConnectError::Authentication {
            hosts,
            user,
            reason,
        },
        ErrorKind::InvalidArgument { .. } | ErrorKind::InvalidTlsConfig { .. } => {
            ConnectError::InvalidUri { reason }
        }
        ErrorKind::ServerSelection { .. } if looks_like_auth => ConnectError::Authentication {
            hosts,
            user,
            reason,
        },
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::ConnectionPoolCleared { .. } => ConnectError::Unreachable { hosts, reason },
        _ => ConnectError::Server { hosts, reason },
    }
}

/// The driver's message without its `Kind:` framing and label noise.
fn driver_message(error: &mongodb::error::Error) -> String {
    match error.kind.as_ref() {
        ErrorKind::InvalidArgument { message, .. }
        | ErrorKind::Authentication { message, .. }
        | ErrorKind::DnsResolve { message, .. }
        | ErrorKind::InvalidTlsConfig { message, .. }
        | ErrorKind::ConnectionPoolCleared { message, .. } => message.clone(),
        ErrorKind::ServerSelection { message, .. } => server_errors(message),
        ErrorKind::Command(c) => format!("{} (code {} {})", c.message, c.code, c.code_name),
        ErrorKind::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// A server-selection message lists the whole topology; what a user needs is
/// each server's error ("Connection refused", "Authentication failed…").
fn server_errors(message: &str) -> String {
    let mut errors: Vec<&str> = message
        .split("Error: Kind: ")
        .skip(1)
        .filter_map(|rest| rest.split(", labels:").next())
        .map(str::trim)
        .collect();
    errors.dedup();
    if errors.is_empty() {
        message.to_string()
    } else {
        errors.join("; ")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn selection_errors_are_summarised() {
        let m = "Server selection timeout: No available servers. Topology: { Type: Unknown, Servers: [ { Address: 127.0.0.1:41579, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: {\"RetryableError\"}, source: None, server response: None } ] }";
        assert_eq!(
            super::server_errors(m),
            "I/O error: Connection refused (os error 111)"
        );
        assert_eq!(super::server_errors("plain"), "plain");
    }

    use super::*;

    #[tokio::test]
    async fn malformed_uri_is_a_syntax_error_without_password() {
        let err = build_client("mongodb://::bad", "t", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::InvalidUri { .. }), "{err:?}");
        let err = build_client(
            "mongodb://u:hunter2@h:notaport",
            "t",
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("not valid"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[tokio::test]
    async fn missing_scheme_is_rejected() {
        let err = build_client("localhost:27017", "t", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("scheme"), "{err}");
    }
}

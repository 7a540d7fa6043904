//! What can go wrong when setting the notifiers up, as types.
//!
//! In: the checks of [`NotifierConfig::validate`](super::NotifierConfig::validate),
//! [`RetryConfig::validate`](super::RetryConfig::validate) and the building of each
//! notifier's client. Out: errors whose message names the notifier and the field and says
//! what to change. No variant holds a secret: they quote names, hosts, addresses and
//! header names only, and library messages are scrubbed before they are wrapped.

use thiserror::Error;

/// One notifier's configuration is wrong: `notifier '<name>': <problem>`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("notifier '{name}': {problem}")]
pub struct InvalidNotifier {
    /// The notifier's name, made printable.
    pub name: String,
    pub problem: NotifierProblem,
}

/// What is wrong in one notifier's fields.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NotifierProblem {
    #[error("name must not be empty")]
    EmptyName,
    #[error("name must not contain control characters")]
    ControlCharacterInName,
    #[error("name must be at most 100 characters")]
    NameTooLong,
    #[error("url {0}")]
    Url(UrlProblem),
    #[error("secret must not be empty when set (remove it to send unsigned requests)")]
    EmptySigningSecret,
    #[error("headers: '{0}' is not a valid header name")]
    InvalidHeaderName(String),
    #[error("headers: '{0}' is set by Mongo Pulse and cannot be overridden")]
    ReservedHeader(String),
    #[error("headers: the value of '{0}' is not a valid header value (visible ASCII only)")]
    InvalidHeaderValue(String),
    /// `channel`, `username`, `password` or `token` given as an empty string.
    #[error("{0} must not be empty when set")]
    EmptyWhenSet(&'static str),
    #[error("host must not be empty")]
    EmptyHost,
    #[error("host '{0}' must be a host name or an IP address")]
    InvalidHost(String),
    #[error("port must be between 1 and 65535")]
    InvalidPort,
    #[error("from '{address}' is not a valid address: {reason}")]
    InvalidFrom { address: String, reason: String },
    #[error("to must list at least one address")]
    NoRecipient,
    #[error("to: '{address}' is not a valid address: {reason}")]
    InvalidRecipient { address: String, reason: String },
    #[error(
        "password needs starttls = true: without it the credentials would cross the network \
         in clear text"
    )]
    ClearTextCredentials,
    /// Half of a username/password pair.
    #[error("{given} is set but {missing} is missing")]
    HalfCredentials {
        given: &'static str,
        missing: &'static str,
    },
    #[error("accept_invalid_certs only applies with starttls = true")]
    InvalidCertsWithoutTls,
    #[error("token and username/password are exclusive: set one of them")]
    TokenAndBasicAuth,
}

/// Why a receiver URL is refused; completes "url …". Never quotes the URL (it may hold
/// a secret).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UrlProblem {
    #[error("is not a valid URL ({0})")]
    Unparsable(String),
    #[error("must start with http:// or https:// (got {0}://)")]
    NotHttp(String),
    #[error("has no host")]
    NoHost,
    #[error("must not have leading or trailing spaces")]
    SurroundingSpaces,
}

/// The `[alerting.retry]` policy is out of bounds.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RetryError {
    #[error("alerting retry: attempts must be between 1 and 20 (got {0})")]
    Attempts(u32),
    #[error("alerting retry: timeout_ms must be at least 1")]
    ZeroTimeout,
    #[error(
        "alerting retry: initial_backoff_ms ({initial}) must not exceed max_backoff_ms ({max})"
    )]
    BackoffOrder { initial: u64, max: u64 },
}

/// A notifier's client cannot be built from a configuration that passed validation, or
/// one notification cannot be turned into a message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SenderError {
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    #[error("headers: '{0}' is not a valid header name")]
    HeaderName(String),
    #[error("headers: the value of '{0}' is not a valid header value")]
    HeaderValue(String),
    #[error("url is not a valid URL ({0})")]
    Url(String),
    #[error("token contains characters not allowed in an HTTP header")]
    TokenNotHeaderSafe,
    #[error("from is not a valid address: {0}")]
    From(String),
    #[error("to: '{address}' is not a valid address: {reason}")]
    To { address: String, reason: String },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot build the message: {0}")]
    Message(String),
}

/// One problem found by [`Notifiers::new`](super::Notifiers::new).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SetupProblem {
    #[error(transparent)]
    Retry(#[from] RetryError),
    #[error(transparent)]
    Invalid(#[from] InvalidNotifier),
    #[error("{0}")]
    Client(SenderError),
    #[error("notifier '{0}': name is used by another notifier; names must be unique")]
    DuplicateName(String),
    /// `reason` has been scrubbed of the notifier's secrets.
    #[error("notifier '{name}': {reason}")]
    Sender { name: String, reason: String },
}

/// Every problem [`Notifiers::new`](super::Notifiers::new) found, joined with `; `, so one
/// start-up shows all there is to fix in `[[alerting.notifiers]]`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{}", join(.0))]
pub struct NotifiersError(pub Vec<SetupProblem>);

fn join(problems: &[SetupProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

//! MongoDB access shared by the plugin and the daemon.
//!
//! In: a connection URI and a time budget. Out: a `mongodb::Client`, the
//! collection names the product uses, whether the daemon can store events
//! ([`readiness`]), and [`ConnectError`]s whose messages say
//! what went wrong and what to do, with any password in the URI redacted.

mod collections;
mod connect;
pub mod readiness;
mod redact;
pub mod schema;

pub use collections::{CollectionNames, ROLLUP_LEVELS};
pub use connect::{build_client, build_client_with_tls, classify_error, ClientTls, ConnectError};
pub use redact::Redactor;

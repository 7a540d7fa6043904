//! Keeps passwords out of anything a user or a log can see.
//!
//! The driver's own messages sometimes quote parts of the URI, so every message
//! that leaves the store goes through [`Redactor::clean`].

/// What must never be shown from one connection URI: its password, both as
/// written and percent-decoded.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
    hosts: String,
    user: Option<String>,
}

const MASK: &str = "****";

impl Redactor {
    /// Reads the user, password and hosts out of a `mongodb://` or
    /// `mongodb+srv://` URI by hand, so it works on URIs the driver rejects.
    pub fn for_uri(uri: &str) -> Self {
        let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
        // Options (`?appName=a@b`) never hold the credentials: look for '@' before them.
        let rest = rest
            .split_once('?')
            .map_or(rest, |(authority_and_path, _)| authority_and_path);
        // The authority ends at the first '/' or '?' after the last '@'.
        let (userinfo, after_at) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let hosts = after_at
            .split(['/', '?'])
            .next()
            .unwrap_or_default()
            .to_string();
        let mut secrets = Vec::new();
        let mut user = None;
        if let Some(info) = userinfo {
            let (name, password) = match info.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (info, None),
            };
            user = Some(percent_decode(name));
            if let Some(p) = password.filter(|p| !p.is_empty()) {
                secrets.push(p.to_string());
                let decoded = percent_decode(p);
                if decoded != p {
                    secrets.push(decoded);
                }
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor {
            secrets,
            hosts,
            user,
        }
    }

    /// Masks the given secrets (non-empty ones), for connections configured by fields
    /// rather than a URI.
    pub fn for_secrets(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor {
            secrets,
            ..Default::default()
        }
    }

    /// The `host:port` list as written in the URI (never contains credentials).
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    /// The user name, if the URI has one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The URI with its password replaced by `****`, everything else kept.
    pub fn redact_uri(uri: &str) -> String {
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Self::for_uri(uri).clean(uri);
        };
        let before_options = rest.find('?').unwrap_or(rest.len());
        match rest[..before_options].rfind('@') {
            Some(at) => match rest[..at].split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:{MASK}{}", &rest[at..]),
                None => uri.to_string(),
            },
            None => uri.to_string(),
        }
    }

    /// Returns `text` with every occurrence of the password replaced by `****`.
    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), MASK);
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_plain_and_encoded_passwords() {
        let r = Redactor::for_uri("mongodb://alice:p%40ss:w0rd@db1:27017,db2/?replicaSet=rs0");
        assert_eq!(r.hosts(), "db1:27017,db2");
        assert_eq!(r.user(), Some("alice"));
        let msg = "failed for mongodb://alice:p%40ss:w0rd@db1 (password p@ss:w0rd)";
        let cleaned = r.clean(msg);
        assert!(!cleaned.contains("w0rd"), "{cleaned}");
        assert!(cleaned.contains("alice:****@db1"), "{cleaned}");
    }

    #[test]
    fn redacts_a_uri_structurally() {
        assert_eq!(
            Redactor::redact_uri("mongodb://a:b@mongodb:27017/?replicaSet=rs0"),
            "mongodb://a:****@mongodb:27017/?replicaSet=rs0"
        );
        assert_eq!(Redactor::redact_uri("mongodb://h"), "mongodb://h");
    }

    #[test]
    fn an_at_sign_in_the_options_is_not_the_credentials() {
        let r = Redactor::for_uri("mongodb://u:pw-secret@h:27017/?appName=a@b");
        assert_eq!(r.hosts(), "h:27017");
        assert_eq!(r.clean("pw-secret"), "****");
    }

    #[test]
    fn uri_without_credentials_has_nothing_to_mask() {
        let r = Redactor::for_uri("mongodb://localhost:27017");
        assert_eq!(r.hosts(), "localhost:27017");
        assert_eq!(r.user(), None);
        assert_eq!(r.clean("localhost said no"), "localhost said no");
    }

    #[test]
    fn password_containing_at_sign_unencoded() {
        // Not valid per the spec, but users type it; the last '@' ends the userinfo.
        let r = Redactor::for_uri("mongodb://bob:se@cret@host");
        assert_eq!(r.hosts(), "host");
        assert_eq!(r.clean("se@cret"), "****");
    }
}

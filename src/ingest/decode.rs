//! Request bodies → the bytes of each event.
//!
//! In: a body as received, its `Content-Type` and `Content-Encoding`. Out: the
//! decompressed body, then one byte slice per event (JSON object, JSON array
//! of objects, or NDJSON), or a [`BodyError`] for the request as a whole.

use std::io::Read;

use serde_json::value::RawValue;
use thiserror::Error;

/// Problems with a request as a whole; each maps to one HTTP status.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the body is larger than {limit} bytes (after decompression); send smaller batches or raise ingest.limits.max_body_bytes")]
    TooLarge { limit: usize },
    #[error("{count} events in one request, at most {limit} allowed; split the batch or raise ingest.limits.max_events_per_request")]
    TooManyEvents { count: usize, limit: usize },
    #[error("Content-Encoding '{0}' is not supported; use gzip, zstd or none")]
    UnsupportedEncoding(String),
    #[error("Content-Type '{0}' is not supported; use application/json or application/x-ndjson")]
    UnsupportedType(String),
    #[error("the body could not be decompressed as {encoding}: {reason}")]
    BadCompression {
        encoding: &'static str,
        reason: String,
    },
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
    #[error("the body holds no events")]
    Empty,
    #[error("the body is not valid JSON: {0}. Send one event object, an array of event objects, or NDJSON with Content-Type application/x-ndjson")]
    BadJson(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
}

impl Format {
    /// From a `Content-Type` header; none means JSON.
    pub fn from_content_type(value: Option<&str>) -> Result<Format, BodyError> {
        let Some(value) = value else {
            return Ok(Format::Json);
        };
        let mime = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "" | "application/json" | "text/json" => Ok(Format::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Ok(Format::Ndjson),
            _ => Err(BodyError::UnsupportedType(mime)),
        }
    }
}

/// Undoes `Content-Encoding`, refusing to inflate past `limit` bytes.
pub fn decompress(body: &[u8], encoding: Option<&str>, limit: usize) -> Result<Vec<u8>, BodyError> {
    let encoding = encoding
        .map(|e| e.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let too_large = BodyError::TooLarge { limit };
    let read_bounded = |reader: &mut dyn Read, name: &'static str| -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
        let mut bounded = reader.take(limit as u64 + 1);
        bounded
            .read_to_end(&mut out)
            .map_err(|e| BodyError::BadCompression {
                encoding: name,
                reason: e.to_string(),
            })?;
        if out.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        Ok(out)
    };
    match encoding.as_str() {
        "" | "identity" => {
            if body.len() > limit {
                return Err(too_large);
            }
            Ok(body.to_vec())
        }
        "gzip" | "x-gzip" => read_bounded(&mut flate2::read::MultiGzDecoder::new(body), "gzip"),
        "zstd" => {
            let mut decoder =
                zstd::stream::read::Decoder::new(body).map_err(|e| BodyError::BadCompression {
                    encoding: "zstd",
                    reason: e.to_string(),
                })?;
            read_bounded(&mut decoder, "zstd")
        }
        other => Err(BodyError::UnsupportedEncoding(other.to_string())),
    }
}

/// Splits a body into one slice per event.
pub fn split(body: &[u8], format: Format, max_events: usize) -> Result<Vec<&[u8]>, BodyError> {
    let items: Vec<&[u8]> = match format {
        Format::Ndjson => {
            // memchr finds the line ends many bytes at a time; a byte-by-byte
            // split was a tenth of decoding a batch.
            let mut lines = Vec::with_capacity(body.len() / 256 + 1);
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', body).chain([body.len()]) {
                let line = body.get(start..end).map(trim).unwrap_or_default();
                if !line.is_empty() {
                    lines.push(line);
                }
                start = end + 1;
            }
            lines
        }
        Format::Json => {
            let trimmed = trim(body);
            match trimmed.first() {
                None => return Err(BodyError::Empty),
                Some(b'[') => {
                    let raw: Vec<&RawValue> = serde_json::from_slice(trimmed)
                        .map_err(|e| BodyError::BadJson(explain_json_error(trimmed, &e)))?;
                    raw.into_iter().map(|r| r.get().as_bytes()).collect()
                }
                // One event on its own. A body that is not JSON at all is the body's
                // problem (400), as for an array; JSON that is not a valid event
                // (a number, an object missing fields) is the event's (422).
                Some(_) => {
                    let raw: &RawValue = serde_json::from_slice(trimmed)
                        .map_err(|e| BodyError::BadJson(explain_json_error(trimmed, &e)))?;
                    vec![raw.get().as_bytes()]
                }
            }
        }
    };
    if items.is_empty() {
        return Err(BodyError::Empty);
    }
    if items.len() > max_events {
        return Err(BodyError::TooManyEvents {
            count: items.len(),
            limit: max_events,
        });
    }
    Ok(items)
}

/// serde_json's message for `bytes`, with what the client should change for
/// the hostile cases its wording leaves unclear: bytes that are not UTF-8,
/// NaN and Infinity (not JSON), numbers no f64 holds, and nesting past the
/// parser's recursion bound (128 levels).
pub fn explain_json_error(bytes: &[u8], e: &serde_json::Error) -> String {
    let text = e.to_string();
    if let Err(bad) = std::str::from_utf8(bytes) {
        return format!(
            "{text}: the text is not valid UTF-8 (first bad byte at offset {}); send JSON encoded as UTF-8",
            bad.valid_up_to()
        );
    }
    if text.contains("recursion limit exceeded") {
        return format!("{text}: nested more than 128 levels deep; attributes and geo may nest at most ingest.limits.max_depth levels");
    }
    if text.contains("number out of range") {
        return format!("{text}: numbers must fit a 64-bit float");
    }
    if e.is_syntax() && e.line() > 0 {
        // The error's position, as a byte offset (columns count bytes from 1).
        let offset = bytes
            .split(|b| *b == b'\n')
            .take(e.line() - 1)
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + e.column().saturating_sub(1);
        let near = &bytes[offset.saturating_sub(2).min(bytes.len())..(offset + 9).min(bytes.len())];
        if near.windows(3).any(|w| w == b"NaN") || near.windows(8).any(|w| w == b"Infinity") {
            return format!(
                "{text}: JSON has no NaN or Infinity; send finite numbers, or leave the metric out"
            );
        }
    }
    text
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn object_array_and_ndjson_split_into_events() {
        assert_eq!(
            split(b" {\"a\":1} ", Format::Json, 10).unwrap(),
            vec![&b"{\"a\":1}"[..]]
        );
        assert_eq!(
            split(b"[{\"a\":1}, {\"b\":[2]}]", Format::Json, 10).unwrap(),
            vec![&b"{\"a\":1}"[..], &b"{\"b\":[2]}"[..]]
        );
        assert_eq!(
            split(b"{\"a\":1}\r\n\n{\"b\n", Format::Ndjson, 10).unwrap(),
            vec![&b"{\"a\":1}"[..], &b"{\"b"[..]]
        );
        assert_eq!(split(b"  ", Format::Json, 10), Err(BodyError::Empty));
        assert!(matches!(
            split(b"[{\"a\":1},", Format::Json, 10),
            Err(BodyError::BadJson(_))
        ));
        // Not JSON at all, as a single body: the body is refused, not an event.
        for body in [
            &b"not json"[..],
            b"{\"a\":",
            b"{\"a\":1} trailing",
            b"<xml/>",
        ] {
            assert!(
                matches!(split(body, Format::Json, 10), Err(BodyError::BadJson(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // JSON that is no event is split as one; the validator refuses it.
        assert_eq!(split(b"42", Format::Json, 10).unwrap(), vec![&b"42"[..]]);
        assert!(matches!(
            split(b"[1,2,3]", Format::Json, 2),
            Err(BodyError::TooManyEvents { count: 3, limit: 2 })
        ));
    }

    #[test]
    fn gzip_and_zstd_bodies_are_inflated_within_the_limit() {
        let text = b"{\"a\":1}\n".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress(&gz, Some("gzip"), 10_000).unwrap(), text);
        assert_eq!(
            decompress(&gz, Some("gzip"), 100),
            Err(BodyError::TooLarge { limit: 100 })
        );
        let zs = zstd::encode_all(&text[..], 3).unwrap();
        assert_eq!(decompress(&zs, Some("zstd"), 10_000).unwrap(), text);
        assert!(matches!(
            decompress(b"nope", Some("gzip"), 100),
            Err(BodyError::BadCompression { .. })
        ));
        assert!(matches!(
            decompress(b"x", Some("br"), 100),
            Err(BodyError::UnsupportedEncoding(_))
        ));
    }

    #[test]
    fn content_types() {
        assert_eq!(Format::from_content_type(None).unwrap(), Format::Json);
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            Format::Json
        );
        assert_eq!(
            Format::from_content_type(Some("application/x-ndjson")).unwrap(),
            Format::Ndjson
        );
        assert!(Format::from_content_type(Some("text/csv")).is_err());
    }

    #[test]
    fn json_errors_say_what_to_change() {
        let why = |body: &[u8]| {
            let e = serde_json::from_slice::<serde_json::Value>(body).unwrap_err();
            explain_json_error(body, &e)
        };
        assert!(why(b"{\"x\": NaN}").contains("no NaN or Infinity"));
        assert!(why(b"{\"x\": -Infinity}").contains("no NaN or Infinity"));
        assert!(why(b"{\"x\": 1e999}").contains("64-bit float"));
        assert!(why(b"{\"x\": \"\xff\"}").contains("not valid UTF-8 (first bad byte at offset 7)"));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(why(deep.as_bytes()).contains("128 levels"));
        assert!(!why(b"{\"x\": nope}").contains("NaN"));
    }
}

//! Writes the rollup documents as BSON bytes, straight into one buffer.
//!
//! In: the fields of a stored document, in order. Out: a [`RawDocumentBuf`] with the
//! bytes the `bson` crate writes for the same fields (tested byte for byte).
//!
//! Why not the crate's builders: a `Document` is a map of owned keys and values, built
//! only to be serialised, and `RawDocumentBuf::append` grows its buffer a few bytes at a
//! time and copies every subdocument into its parent. Together they cost more than
//! everything else in a flush. Here each subdocument is written in place, and its
//! length is filled in when it ends.

use bson::RawDocumentBuf;

pub struct BsonWriter {
    buf: Vec<u8>,
    /// Where each document still open starts (its length goes there).
    open: Vec<usize>,
}

const DOUBLE: u8 = 0x01;
const STRING: u8 = 0x02;
const DOCUMENT: u8 = 0x03;
const ARRAY: u8 = 0x04;
const BINARY: u8 = 0x05;
const BOOLEAN: u8 = 0x08;
const DATE_TIME: u8 = 0x09;
const NULL: u8 = 0x0A;
const INT64: u8 = 0x12;

impl BsonWriter {
    /// A new top-level document; `capacity` is a guess of its size in bytes.
    pub fn new(capacity: usize) -> BsonWriter {
        let mut buf = Vec::with_capacity(capacity.max(5));
        buf.extend_from_slice(&[0; 4]);
        BsonWriter { buf, open: vec![0] }
    }

    fn key(&mut self, kind: u8, key: &str) {
        self.buf.push(kind);
        // Field names are checked before they get here (no NUL: see the validator and
        // the spec's field names); cutting at one keeps the bytes well formed anyway.
        let key = key.as_bytes();
        let end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
        self.buf.extend_from_slice(&key[..end]);
        self.buf.push(0);
    }

    pub fn str(&mut self, key: &str, value: &str) {
        self.key(STRING, key);
        self.buf
            .extend_from_slice(&(value.len() as i32 + 1).to_le_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
    }

    pub fn f64(&mut self, key: &str, value: f64) {
        self.key(DOUBLE, key);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn i64(&mut self, key: &str, value: i64) {
        self.key(INT64, key);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(BOOLEAN, key);
        self.buf.push(value as u8);
    }

    pub fn date_time(&mut self, key: &str, epoch_ms: i64) {
        self.key(DATE_TIME, key);
        self.buf.extend_from_slice(&epoch_ms.to_le_bytes());
    }

    pub fn null(&mut self, key: &str) {
        self.key(NULL, key);
    }

    /// Generic binary (subtype 0).
    pub fn binary(&mut self, key: &str, bytes: &[u8]) {
        self.key(BINARY, key);
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_le_bytes());
        self.buf.push(0);
        self.buf.extend_from_slice(bytes);
    }

    /// A whole document written elsewhere, as a subdocument.
    pub fn document(&mut self, key: &str, document: &bson::RawDocument) {
        self.key(DOCUMENT, key);
        self.buf.extend_from_slice(document.as_bytes());
    }

    /// Opens a subdocument; [`BsonWriter::end`] closes it.
    pub fn begin_document(&mut self, key: &str) {
        self.key(DOCUMENT, key);
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0; 4]);
    }

    /// Opens an array: its elements are keyed by [`BsonWriter::index`].
    pub fn begin_array(&mut self, key: &str) {
        self.key(ARRAY, key);
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0; 4]);
    }

    /// Closes the innermost open subdocument or array.
    pub fn end(&mut self) {
        if self.open.len() > 1 {
            self.close();
        }
    }

    fn close(&mut self) {
        self.buf.push(0);
        if let Some(start) = self.open.pop() {
            let length = (self.buf.len() - start) as i32;
            self.buf[start..start + 4].copy_from_slice(&length.to_le_bytes());
        }
    }

    /// Closes whatever is still open and hands the document over.
    pub fn finish(mut self) -> RawDocumentBuf {
        while !self.open.is_empty() {
            self.close();
        }
        RawDocumentBuf::from_bytes(self.buf)
            .expect("every document the writer opened is closed with its length")
    }
}

/// An array element's key: its index in decimal.
pub fn index(i: usize, out: &mut String) -> &str {
    const SMALL: [&str; 16] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
    ];
    if let Some(key) = SMALL.get(i) {
        return key;
    }
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, "{i}");
    out.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::spec::BinarySubtype;
    use bson::{doc, Binary, Bson};

    #[test]
    fn bytes_are_the_crates() {
        let mut w = BsonWriter::new(0);
        w.str("_id", "minute:1:w");
        w.str("empty", "");
        w.f64("x", -0.5);
        w.i64("n", i64::MIN);
        w.bool("final", true);
        w.date_time("at", 1_733_754_600_000);
        w.null("none");
        w.binary("sketch", &[1, 2, 3, 0, 255]);
        w.begin_document("dimensions");
        w.str("country", "FR é");
        w.begin_document("deeper");
        w.end();
        w.end();
        w.begin_array("rows");
        let mut key = String::new();
        for i in 0..12 {
            w.begin_document(index(i, &mut key));
            w.str("value", "/p");
            w.i64("count", i as i64);
            w.end();
        }
        w.end();
        w.begin_document("left open");
        w.bool("closed by finish", false);
        let ours = w.finish();

        let rows: Vec<Bson> = (0..12)
            .map(|i| Bson::Document(doc! { "value": "/p", "count": i as i64 }))
            .collect();
        let theirs = doc! {
            "_id": "minute:1:w",
            "empty": "",
            "x": -0.5,
            "n": i64::MIN,
            "final": true,
            "at": bson::DateTime::from_millis(1_733_754_600_000),
            "none": Bson::Null,
            "sketch": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3, 0, 255] },
            "dimensions": { "country": "FR é", "deeper": {} },
            "rows": rows,
            "left open": { "closed by finish": false },
        };
        let mut expected = Vec::new();
        theirs.to_writer(&mut expected).unwrap();
        assert_eq!(ours.as_bytes(), &expected[..]);
    }

    #[test]
    fn a_key_with_a_nul_is_cut_there_and_stays_well_formed() {
        let mut w = BsonWriter::new(0);
        w.i64("a\0b", 1);
        let d = w.finish().to_document().unwrap();
        assert_eq!(d, doc! { "a": 1i64 });
    }
}

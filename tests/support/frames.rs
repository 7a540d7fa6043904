//! Decodes the Arrow IPC frames a plugin returns, as Grafana does.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;

use grafana_plugin_sdk::arrow2;
use grafana_plugin_sdk::pluginv2;
use serde_json::Value;

use arrow2::array::{Array, BooleanArray, PrimitiveArray, Utf8Array};
use arrow2::datatypes::DataType;
use arrow2::io::ipc::read::{read_file_metadata, FileReader};

#[derive(Debug, Clone)]
pub struct DecodedField {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub values: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct DecodedFrame {
    pub name: String,
    pub meta: Value,
    pub fields: Vec<DecodedField>,
}

impl DecodedFrame {
    pub fn field(&self, name: &str) -> &DecodedField {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no field {name} in {:?}",
                    self.fields.iter().map(|f| &f.name).collect::<Vec<_>>()
                )
            })
    }

    /// The numeric field of a time-series frame (the one that is not `time`).
    pub fn value_field(&self) -> &DecodedField {
        self.fields
            .iter()
            .find(|f| f.name != "time")
            .expect("a value field")
    }

    pub fn times(&self) -> Vec<i64> {
        self.field("time")
            .values
            .iter()
            .map(|v| v.as_i64().expect("time"))
            .collect()
    }
}

fn values(array: &dyn Array) -> Vec<Value> {
    let n = array.len();
    let any = array.as_any();
    let get =
        |i: usize, f: &dyn Fn(usize) -> Value| if array.is_null(i) { Value::Null } else { f(i) };
    match array.data_type() {
        DataType::Float64 => {
            let a = any.downcast_ref::<PrimitiveArray<f64>>().unwrap();
            (0..n)
                .map(|i| get(i, &|i| serde_json::json!(a.value(i))))
                .collect()
        }
        DataType::Int64 | DataType::Timestamp(..) => {
            let a = any.downcast_ref::<PrimitiveArray<i64>>().unwrap();
            (0..n)
                .map(|i| get(i, &|i| serde_json::json!(a.value(i))))
                .collect()
        }
        DataType::Utf8 => {
            let a = any.downcast_ref::<Utf8Array<i32>>().unwrap();
            (0..n)
                .map(|i| get(i, &|i| serde_json::json!(a.value(i))))
                .collect()
        }
        DataType::LargeUtf8 => {
            let a = any.downcast_ref::<Utf8Array<i64>>().unwrap();
            (0..n)
                .map(|i| get(i, &|i| serde_json::json!(a.value(i))))
                .collect()
        }
        DataType::Boolean => {
            let a = any.downcast_ref::<BooleanArray>().unwrap();
            (0..n)
                .map(|i| get(i, &|i| serde_json::json!(a.value(i))))
                .collect()
        }
        other => panic!("unexpected arrow type {other:?}"),
    }
}

pub fn decode(bytes: &[u8]) -> DecodedFrame {
    let mut cursor = Cursor::new(bytes);
    let metadata = read_file_metadata(&mut cursor).expect("an Arrow IPC file");
    let schema = metadata.schema.clone();
    let reader = FileReader::new(cursor, metadata, None, None);
    let mut columns: Vec<Vec<Value>> = vec![Vec::new(); schema.fields.len()];
    for chunk in reader {
        let chunk = chunk.expect("chunk");
        for (i, a) in chunk.arrays().iter().enumerate() {
            columns[i].extend(values(a.as_ref()));
        }
    }
    let fields = schema
        .fields
        .iter()
        .zip(columns)
        .map(|(f, values)| DecodedField {
            name: f.name.clone(),
            labels: f
                .metadata
                .get("labels")
                .map(|l| serde_json::from_str(l).unwrap_or_default())
                .unwrap_or_default(),
            values,
        })
        .collect();
    DecodedFrame {
        name: schema.metadata.get("name").cloned().unwrap_or_default(),
        meta: schema
            .metadata
            .get("meta")
            .map(|m| serde_json::from_str(m).unwrap())
            .unwrap_or(Value::Null),
        fields,
    }
}

/// Frames of each refId, or its error.
pub fn by_ref(
    response: pluginv2::QueryDataResponse,
) -> HashMap<String, Result<Vec<DecodedFrame>, String>> {
    response
        .responses
        .into_iter()
        .map(|(k, r)| {
            let v = if r.error.is_empty() {
                Ok(r.frames.iter().map(|b| decode(b)).collect())
            } else {
                Err(r.error)
            };
            (k, v)
        })
        .collect()
}

//! Reads the frames a plugin returns the way Grafana reads them — never the
//! way our encoder writes them — so that a test cannot agree with the code
//! against Grafana.
//!
//! Arrow IPC (QueryData answers), after grafana-plugin-sdk-go `data/arrow.go`
//! (`initializeFrameFields`, `initializeFrameField`, `parseColumn`):
//! - a field's type comes from the Arrow schema, and only these are accepted:
//!   `STRING` (not large string), `INT8`–`INT64`, `UINT8`–`UINT64`, `FLOAT32`,
//!   `FLOAT64`, `BOOL`, `TIMESTAMP` and `BINARY` (JSON). Anything else fails
//!   the whole frame ("unsupported conversion from arrow to sdk type");
//! - a `TIMESTAMP` value is nanoseconds since 1970 whatever unit the schema
//!   declares (`time.Unix(0, int64(ts)) // nanosecond assumption`);
//! - nulls are read only where the schema field is nullable; a non-nullable
//!   field's null slot is read as its raw value, so we call that an error;
//! - field labels and config come from the field metadata keys `labels` and
//!   `config`; the frame's `name`, `refId` and `meta` from the schema metadata.
//!
//! Frame JSON (Grafana Live packets), after grafana-plugin-sdk-go
//! `data/frame_json.go` (`readDataFrameJSON`, `readTimeVectorJSON`) and
//! `@grafana/data`'s `dataFrameFromJSON`:
//! - `{"schema": {name, refId, meta, fields: [{name, type, typeInfo: {frame,
//!   nullable}, labels, config}]}, "data": {values, entities, nanos}}`, no
//!   other top-level key;
//! - the server reads a field's type from `typeInfo.frame` (`time.Time`,
//!   `float64`, `string`, …), the browser from `type` (`time`, `number`,
//!   `string`, `boolean`, `other`): both must be present and agree;
//! - time values are epoch **milliseconds**, plus the optional `nanos`;
//! - `entities` restores NaN, +Inf and -Inf of number fields.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;

use chrono::{DateTime, SecondsFormat, Utc};
use grafana_plugin_sdk::arrow2;
use grafana_plugin_sdk::pluginv2;
use serde_json::Value;

use arrow2::array::{Array, BinaryArray, BooleanArray, PrimitiveArray, Utf8Array};
use arrow2::datatypes::DataType;
use arrow2::io::ipc::read::{read_file_metadata, FileReader};
use arrow2::types::NativeType;

/// What Grafana makes of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Time,
    Number,
    String,
    Bool,
    Json,
}

#[derive(Debug, Clone)]
pub struct DecodedField {
    pub name: String,
    pub kind: FieldType,
    pub labels: BTreeMap<String, String>,
    pub config: Value,
    /// Numbers, strings, booleans and JSON as JSON values; times as RFC 3339
    /// text (read them with [`DecodedField::times`], never as integers).
    pub values: Vec<Value>,
    instants: Vec<Option<DateTime<Utc>>>,
}

impl DecodedField {
    /// The instants of a time field; panics on any other field or a null.
    pub fn times(&self) -> Vec<DateTime<Utc>> {
        assert_eq!(
            self.kind,
            FieldType::Time,
            "field {} is not a time field",
            self.name
        );
        self.instants
            .iter()
            .map(|t| t.unwrap_or_else(|| panic!("a null in time field {}", self.name)))
            .collect()
    }

    /// The instants of a time field, nulls kept.
    pub fn optional_times(&self) -> Vec<Option<DateTime<Utc>>> {
        assert_eq!(
            self.kind,
            FieldType::Time,
            "field {} is not a time field",
            self.name
        );
        self.instants.clone()
    }
}

#[derive(Debug, Clone)]
pub struct DecodedFrame {
    pub name: String,
    pub ref_id: String,
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
            .find(|f| f.kind == FieldType::Number)
            .expect("a number field")
    }

    /// The instants of the `time` field.
    pub fn times(&self) -> Vec<DateTime<Utc>> {
        self.field("time").times()
    }
}

/// The instant `ms` milliseconds after 1970, for comparing with time fields.
pub fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("an instant in chrono's range")
}

fn time_text(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn nanos_to_instant(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

fn millis_to_instant(field: &str, ms: i64, extra_nanos: i64) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(ms)
        .and_then(|t| t.checked_add_signed(chrono::Duration::nanoseconds(extra_nanos)))
        .ok_or_else(|| format!("field {field}: time {ms} ms is out of range"))
}

fn number<T: NativeType + Into<Value>>(array: &dyn Array) -> Vec<Value> {
    let a = array
        .as_any()
        .downcast_ref::<PrimitiveArray<T>>()
        .expect("a primitive array of the schema's type");
    a.iter()
        .map(|v| v.map(|x| (*x).into()).unwrap_or(Value::Null))
        .collect()
}

fn floats<T: NativeType + Into<f64>>(array: &dyn Array) -> Vec<Value> {
    let a = array
        .as_any()
        .downcast_ref::<PrimitiveArray<T>>()
        .expect("a primitive array of the schema's type");
    // serde_json has no NaN or infinities: they read as null here.
    a.iter()
        .map(|v| {
            v.map(|x| serde_json::json!((*x).into()))
                .unwrap_or(Value::Null)
        })
        .collect()
}

/// The field type Grafana makes of an Arrow schema type, or why it fails the frame.
fn field_type(name: &str, data_type: &DataType) -> Result<FieldType, String> {
    Ok(match data_type {
        DataType::Utf8 => FieldType::String,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64 => FieldType::Number,
        DataType::Boolean => FieldType::Bool,
        DataType::Timestamp(_, _) => FieldType::Time,
        DataType::Binary => FieldType::Json,
        other => {
            return Err(format!(
                "field {name}: Grafana cannot read Arrow type {other:?} (unsupported conversion \
                 from arrow to sdk type); it reads only string, int8-64, uint8-64, float32/64, \
                 bool, timestamp and binary"
            ))
        }
    })
}

/// One record batch's slice of a field.
struct Column {
    values: Vec<Value>,
    /// For time fields only.
    instants: Vec<Option<DateTime<Utc>>>,
}

impl Column {
    fn plain(values: Vec<Value>) -> Column {
        Column {
            values,
            instants: Vec::new(),
        }
    }
}

/// Values of one column read by Grafana's rules for its schema type.
fn read_column(name: &str, data_type: &DataType, array: &dyn Array) -> Result<Column, String> {
    Ok(match data_type {
        DataType::Utf8 => {
            let a = array
                .as_any()
                .downcast_ref::<Utf8Array<i32>>()
                .expect("utf8");
            let v = a
                .iter()
                .map(|s| s.map(|s| Value::String(s.into())).unwrap_or(Value::Null))
                .collect();
            Column::plain(v)
        }
        DataType::Int8 => Column::plain(number::<i8>(array)),
        DataType::Int16 => Column::plain(number::<i16>(array)),
        DataType::Int32 => Column::plain(number::<i32>(array)),
        DataType::Int64 => Column::plain(number::<i64>(array)),
        DataType::UInt8 => Column::plain(number::<u8>(array)),
        DataType::UInt16 => Column::plain(number::<u16>(array)),
        DataType::UInt32 => Column::plain(number::<u32>(array)),
        DataType::UInt64 => Column::plain(number::<u64>(array)),
        DataType::Float32 => Column::plain(floats::<f32>(array)),
        DataType::Float64 => Column::plain(floats::<f64>(array)),
        DataType::Boolean => {
            let a = array.as_any().downcast_ref::<BooleanArray>().expect("bool");
            let v = a
                .iter()
                .map(|b| b.map(Value::Bool).unwrap_or(Value::Null))
                .collect();
            Column::plain(v)
        }
        // Whatever the declared unit: Grafana assumes nanoseconds.
        DataType::Timestamp(_, _) => {
            let a = array
                .as_any()
                .downcast_ref::<PrimitiveArray<i64>>()
                .expect("timestamp");
            let instants: Vec<Option<DateTime<Utc>>> = a
                .iter()
                .map(|v| v.map(|ns| nanos_to_instant(*ns)))
                .collect();
            let v = instants
                .iter()
                .map(|t| t.map(time_text).unwrap_or(Value::Null))
                .collect();
            Column {
                values: v,
                instants,
            }
        }
        DataType::Binary => {
            let a = array
                .as_any()
                .downcast_ref::<BinaryArray<i32>>()
                .expect("binary");
            let v = a
                .iter()
                .map(|b| match b {
                    None => Ok(Value::Null),
                    Some(bytes) => serde_json::from_slice(bytes)
                        .map_err(|e| format!("field {name}: binary that is not JSON: {e}")),
                })
                .collect::<Result<_, _>>()?;
            Column::plain(v)
        }
        other => return Err(field_type(name, other).err().unwrap_or_default()),
    })
}

fn json_metadata(field: &str, key: &str, text: Option<&String>) -> Result<Value, String> {
    match text {
        None => Ok(Value::Null),
        Some(t) => {
            serde_json::from_str(t).map_err(|e| format!("field {field}: {key} is not JSON: {e}"))
        }
    }
}

fn labels_of(field: &str, v: &Value) -> Result<BTreeMap<String, String>, String> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        v => serde_json::from_value(v.clone())
            .map_err(|e| format!("field {field}: labels are not a string map: {e}")),
    }
}

/// One Arrow IPC file, read as Grafana's backend reads it.
pub fn decode(bytes: &[u8]) -> Result<DecodedFrame, String> {
    let mut cursor = Cursor::new(bytes);
    let metadata =
        read_file_metadata(&mut cursor).map_err(|e| format!("not an Arrow IPC file: {e}"))?;
    let schema = metadata.schema.clone();
    let reader = FileReader::new(cursor, metadata, None, None);
    let mut fields: Vec<DecodedField> = Vec::with_capacity(schema.fields.len());
    for f in &schema.fields {
        let config = json_metadata(&f.name, "config", f.metadata.get("config"))?;
        let labels = labels_of(
            &f.name,
            &json_metadata(&f.name, "labels", f.metadata.get("labels"))?,
        )?;
        let kind = field_type(&f.name, &f.data_type)?;
        fields.push(DecodedField {
            name: f.name.clone(),
            kind,
            labels,
            config,
            values: Vec::new(),
            instants: Vec::new(),
        });
    }
    for chunk in reader {
        let chunk = chunk.map_err(|e| format!("unreadable record batch: {e}"))?;
        for ((array, f), out) in chunk.arrays().iter().zip(&schema.fields).zip(&mut fields) {
            if !f.is_nullable && array.null_count() > 0 {
                return Err(format!(
                    "field {}: declared not nullable but holds {} nulls (Grafana would read their raw slots)",
                    f.name,
                    array.null_count()
                ));
            }
            let column = read_column(&f.name, &f.data_type, array.as_ref())?;
            out.values.extend(column.values);
            out.instants.extend(column.instants);
        }
    }
    Ok(DecodedFrame {
        name: schema.metadata.get("name").cloned().unwrap_or_default(),
        ref_id: schema.metadata.get("refId").cloned().unwrap_or_default(),
        meta: json_metadata("(frame)", "meta", schema.metadata.get("meta"))?,
        fields,
    })
}

/// The server's type name (`typeInfo.frame`) → what it is, and the browser's
/// `type` that must go with it.
fn json_field_type(frame_type: &str) -> Option<(FieldType, &'static str)> {
    Some(match frame_type {
        "time.Time" => (FieldType::Time, "time"),
        "int8" | "int16" | "int32" | "int64" | "uint8" | "uint16" | "uint32" | "uint64"
        | "float32" | "float64" => (FieldType::Number, "number"),
        "string" => (FieldType::String, "string"),
        "bool" => (FieldType::Bool, "boolean"),
        "json.RawMessage" => (FieldType::Json, "other"),
        _ => return None,
    })
}

/// One frame as Grafana Live carries it (JSON), read as Grafana reads it.
pub fn decode_json(bytes: &[u8]) -> Result<DecodedFrame, String> {
    let root: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let obj = root.as_object().ok_or("a frame is a JSON object")?;
    if let Some(k) = obj.keys().find(|k| *k != "schema" && *k != "data") {
        return Err(format!("unexpected top-level key {k:?} in frame JSON"));
    }
    let schema = obj.get("schema").ok_or("frame JSON without a schema")?;
    let schema_fields = schema["fields"].as_array().cloned().unwrap_or_default();
    let data = obj.get("data").cloned().unwrap_or(Value::Null);
    let columns = data["values"].as_array().cloned().unwrap_or_default();
    if !columns.is_empty() && columns.len() != schema_fields.len() {
        return Err(format!(
            "{} value arrays for {} schema fields",
            columns.len(),
            schema_fields.len()
        ));
    }
    let rows = columns
        .first()
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut fields = Vec::with_capacity(schema_fields.len());
    for (i, f) in schema_fields.iter().enumerate() {
        let name = f["name"].as_str().unwrap_or_default().to_string();
        let frame_type = f["typeInfo"]["frame"].as_str().ok_or_else(|| {
            format!("field {name}: no typeInfo.frame (the server reads the type from it)")
        })?;
        let (kind, browser_type) = json_field_type(frame_type)
            .ok_or_else(|| format!("field {name}: Grafana has no field type {frame_type:?}"))?;
        let declared = f["type"].as_str().unwrap_or_default();
        if declared != browser_type {
            return Err(format!(
                "field {name}: type {declared:?} does not go with typeInfo.frame {frame_type:?} (expected {browser_type:?})"
            ));
        }
        let nullable = f["typeInfo"]["nullable"].as_bool().unwrap_or(false);
        let raw = match columns.get(i) {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(other) => return Err(format!("field {name}: values are not an array: {other}")),
        };
        if raw.len() != rows {
            return Err(format!(
                "field {name}: {} values where the first field has {rows}",
                raw.len()
            ));
        }
        if !nullable && raw.iter().any(Value::is_null) && kind != FieldType::Number {
            return Err(format!(
                "field {name}: a null in a field not declared nullable"
            ));
        }
        let nanos = data["nanos"].get(i).and_then(Value::as_array);
        let mut values = raw.clone();
        let mut instants = Vec::new();
        if kind == FieldType::Time {
            for (row, v) in raw.iter().enumerate() {
                let t = match v {
                    Value::Null => None,
                    v => {
                        let ms = v.as_i64().ok_or_else(|| {
                            format!("field {name}: time value {v} is not epoch milliseconds")
                        })?;
                        let extra = nanos
                            .and_then(|n| n.get(row))
                            .and_then(Value::as_i64)
                            .unwrap_or(0);
                        Some(millis_to_instant(&name, ms, extra)?)
                    }
                };
                values[row] = t.map(time_text).unwrap_or(Value::Null);
                instants.push(t);
            }
        } else if kind == FieldType::Number {
            if let Some(v) = raw.iter().find(|v| !v.is_null() && !v.is_number()) {
                return Err(format!("field {name}: {v} in a number field"));
            }
        }
        let labels = labels_of(&name, &f["labels"])?;
        fields.push(DecodedField {
            name,
            kind,
            labels,
            config: f["config"].clone(),
            values,
            instants,
        });
    }
    // NaN and infinities travel as null plus their row in `entities` (they
    // stay null here: serde_json holds no NaN), on number fields only.
    if let Some(entities) = data["entities"].as_array() {
        for (i, e) in entities.iter().enumerate() {
            let Some(field) = fields.get(i) else { continue };
            if e.is_object() && field.kind != FieldType::Number {
                return Err(format!(
                    "field {}: entities on a field that is not a number",
                    field.name
                ));
            }
        }
    }
    Ok(DecodedFrame {
        name: schema["name"].as_str().unwrap_or_default().to_string(),
        ref_id: schema["refId"].as_str().unwrap_or_default().to_string(),
        meta: schema["meta"].clone(),
        fields,
    })
}

/// Frames of each refId, or its error. A frame Grafana could not read fails
/// the test here, naming the refId and the field.
pub fn by_ref(
    response: pluginv2::QueryDataResponse,
) -> HashMap<String, Result<Vec<DecodedFrame>, String>> {
    response
        .responses
        .into_iter()
        .map(|(k, r)| {
            let v = if r.error.is_empty() {
                Ok(r.frames
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        decode(b).unwrap_or_else(|e| {
                            panic!("frame {i} of refId {k} cannot be read by Grafana: {e}")
                        })
                    })
                    .collect())
            } else {
                Err(r.error)
            };
            (k, v)
        })
        .collect()
}

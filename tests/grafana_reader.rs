//! The test reader of frames (tests/support/frames.rs) holds to Grafana's
//! rules, shown on frames written by hand with arrow2 and as JSON; and a
//! pipeline result holding every BSON type becomes only fields Grafana reads.

mod support;

use std::io::Cursor;

use bson::{doc, Bson};
use grafana_plugin_sdk::arrow2;
use serde_json::json;
use support::frames::{by_ref, decode, decode_json, instant, FieldType};
use support::mongo::TestMongo;
use support::plugin_harness::{DataSource, PluginProcess};

use arrow2::array::{Array, Float64Array, Int32Array, Int64Array, PrimitiveArray, Utf8Array};
use arrow2::chunk::Chunk;
use arrow2::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow2::io::ipc::write::{FileWriter, WriteOptions};

/// An Arrow IPC file of one field, written without the SDK.
fn ipc(field: Field, array: Box<dyn Array>) -> Vec<u8> {
    let schema = Schema::from(vec![field]);
    let mut out = Cursor::new(Vec::new());
    let mut w = FileWriter::try_new(&mut out, schema, None, WriteOptions { compression: None })
        .expect("a writer");
    w.write(&Chunk::new(vec![array]), None).expect("a batch");
    w.finish().expect("a footer");
    out.into_inner()
}

#[test]
fn large_strings_and_date32_fail_the_frame_naming_the_field() {
    let large = ipc(
        Field::new("page", DataType::LargeUtf8, true),
        Box::new(Utf8Array::<i64>::from([Some("/home")])),
    );
    let err = decode(&large).unwrap_err();
    assert!(err.contains("field page") && err.contains("LargeUtf8"), "{err}");

    let date = ipc(
        Field::new("day", DataType::Date32, true),
        Box::new(Int32Array::from([Some(19_000)]).to(DataType::Date32)),
    );
    let err = decode(&date).unwrap_err();
    assert!(err.contains("field day") && err.contains("Date32"), "{err}");
}

#[test]
fn every_timestamp_is_read_as_nanoseconds_whatever_its_declared_unit() {
    let ms: i64 = 1_764_000_000_000;
    let declared_ms = ipc(
        Field::new("time", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Box::new(
            PrimitiveArray::<i64>::from([Some(ms)])
                .to(DataType::Timestamp(TimeUnit::Millisecond, None)),
        ),
    );
    // What Grafana does with milliseconds: 1970, 29 minutes in.
    let t = decode(&declared_ms).unwrap().times()[0];
    assert_eq!(t, instant(0) + chrono::Duration::nanoseconds(ms));
    assert_eq!(t.format("%Y").to_string(), "1970");

    let declared_ns = ipc(
        Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Box::new(
            PrimitiveArray::<i64>::from([Some(ms * 1_000_000)])
                .to(DataType::Timestamp(TimeUnit::Nanosecond, None)),
        ),
    );
    assert_eq!(decode(&declared_ns).unwrap().times(), vec![instant(ms)]);
}

#[test]
fn labels_come_from_field_metadata_and_nulls_need_a_nullable_field() {
    let mut field = Field::new("count", DataType::Float64, true);
    field
        .metadata
        .insert("labels".into(), r#"{"country":"FR"}"#.into());
    let f = decode(&ipc(field, Box::new(Float64Array::from([Some(2.0), None])))).unwrap();
    assert_eq!(f.fields[0].kind, FieldType::Number);
    assert_eq!(f.fields[0].labels["country"], "FR");
    assert_eq!(f.fields[0].values, vec![json!(2.0), json!(null)]);

    let strict = ipc(
        Field::new("n", DataType::Int64, false),
        Box::new(Int64Array::from([Some(1), None])),
    );
    let err = decode(&strict).unwrap_err();
    assert!(err.contains("field n") && err.contains("not nullable"), "{err}");
}

#[test]
fn live_json_times_are_epoch_milliseconds_and_types_must_agree() {
    let ok = json!({
        "schema": { "name": "wide", "fields": [
            { "name": "time", "type": "time", "typeInfo": { "frame": "time.Time", "nullable": true } },
            { "name": "count", "type": "number", "typeInfo": { "frame": "float64", "nullable": true }, "labels": { "country": "FR" } }
        ] },
        "data": { "values": [[1764000000000i64], [3.0]] }
    });
    let f = decode_json(ok.to_string().as_bytes()).unwrap();
    assert_eq!(f.times(), vec![instant(1_764_000_000_000)]);
    assert_eq!(f.fields[1].labels["country"], "FR");

    let mut mismatch = ok.clone();
    mismatch["schema"]["fields"][0]["type"] = json!("number");
    let err = decode_json(mismatch.to_string().as_bytes()).unwrap_err();
    assert!(err.contains("field time"), "{err}");

    let mut unknown = ok.clone();
    unknown["schema"]["fields"][1]["typeInfo"]["frame"] = json!("decimal");
    let err = decode_json(unknown.to_string().as_bytes()).unwrap_err();
    assert!(err.contains("field count"), "{err}");

    let mut text_time = ok;
    text_time["data"]["values"][0] = json!(["2026-11-24T16:00:00Z"]);
    let err = decode_json(text_time.to_string().as_bytes()).unwrap_err();
    assert!(err.contains("epoch milliseconds"), "{err}");
}

/// Issue 11: one document holding every BSON type, through pipeline mode,
/// becomes only fields Grafana reads, mapped as README's table says.
#[tokio::test]
async fn a_pipeline_result_of_every_bson_type_maps_onto_grafana_field_types() {
    let mongo = TestMongo::start().await;
    let date_ms = 1_764_000_000_123;
    let oid = bson::oid::ObjectId::parse_str("64b7f0a1c2d3e4f5a6b7c8d9").unwrap();
    let every_type = doc! {
        "_id": "all-types",
        "double": 2.5,
        "string": "text",
        "document": { "a": 1, "b": "x" },
        "array": [1, "two"],
        "binary": Bson::Binary(bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2, 3] }),
        "objectId": oid,
        "bool": true,
        "date": bson::DateTime::from_millis(date_ms),
        "null": Bson::Null,
        "regex": Bson::RegularExpression(bson::Regex { pattern: "^a.c$".into(), options: "i".into() }),
        "int32": 7_i32,
        "timestamp": Bson::Timestamp(bson::Timestamp { time: 1_700_000_000, increment: 3 }),
        // 2^53 + 1: a float64 would round it.
        "int64": 9_007_199_254_740_993_i64,
        "decimal": Bson::Decimal128("12.5".parse().unwrap()),
        "minKey": Bson::MinKey,
        "maxKey": Bson::MaxKey,
    };
    mongo
        .db()
        .collection::<bson::Document>("pipeline_stats")
        .insert_one(every_type)
        .await
        .unwrap();
    let plugin = PluginProcess::start().await;
    let ds = DataSource::new(&mongo.uri, &mongo.db_name);
    let q = json!({ "mode": "pipeline", "collection": "pipeline_stats", "format": "table",
        "pipeline": "[{\"$match\": {\"_id\": \"all-types\"}}]" });
    let now = chrono::Utc::now().timestamp_millis();
    let r = plugin
        .query(&ds, &[("A", q, now - 3_600_000, now, 60_000)], &[])
        .await;
    let frames = by_ref(r).remove("A").unwrap().unwrap();
    let f = &frames[0];
    let cell = |name: &str| (f.field(name).kind, f.field(name).values[0].clone());
    use FieldType::*;
    assert_eq!(cell("_id"), (String, json!("all-types")));
    assert_eq!(cell("double"), (Number, json!(2.5)));
    assert_eq!(cell("string"), (String, json!("text")));
    assert_eq!(cell("document"), (String, json!(r#"{"a":1,"b":"x"}"#)));
    assert_eq!(cell("array"), (String, json!(r#"[1,"two"]"#)));
    assert_eq!(cell("binary"), (String, json!("AQID")));
    assert_eq!(cell("objectId"), (String, json!("64b7f0a1c2d3e4f5a6b7c8d9")));
    assert_eq!(cell("bool"), (Bool, json!(true)));
    assert_eq!(f.field("date").times(), vec![instant(date_ms)]);
    assert_eq!(cell("null"), (String, json!(null)));
    assert_eq!(cell("regex"), (String, json!("/^a.c$/i")));
    assert_eq!(cell("int32"), (Number, json!(7)));
    assert_eq!(
        f.field("timestamp").times(),
        vec![instant(1_700_000_000_000)]
    );
    assert_eq!(cell("int64"), (Number, json!(9_007_199_254_740_993_i64)));
    assert_eq!(cell("decimal"), (Number, json!(12.5)));
    assert_eq!(cell("minKey"), (String, json!("MinKey")));
    assert_eq!(cell("maxKey"), (String, json!("MaxKey")));
    assert_eq!(f.fields.len(), 17, "one field per BSON value");
}

//! The store's decoding of what it reads back: SQLite rows (any value in any column, as a damaged
//! or hand-edited database may hold) and MongoDB documents (any BSON, or any bytes) to records.
#![no_main]

use std::cell::RefCell;

use arbitrary::{Arbitrary, Unstructured};
use earshot_store::fuzzing::bson::{self, Bson, Document};
// The store's own rusqlite and bson, so that the types are the ones it decodes with.
use earshot_store::fuzzing::rusqlite::{Connection, params, types::Value as SqlValue};
use earshot_store::fuzzing::{mongo_segment, mongo_session, sqlite_prepare, sqlite_read_session};
use earshot_store::{SessionStatus, SessionWithTranscript, StoreError};
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// One in-memory database for the whole run, emptied before each input: opening one and
    /// creating the schema costs more than a run.
    static DATABASE: RefCell<Connection> = RefCell::new(
        sqlite_prepare(Connection::open_in_memory().expect("in-memory sqlite"))
            .expect("schema"),
    );
}

#[derive(Arbitrary, Debug)]
enum Input {
    Sqlite {
        session: SessionRow,
        segments: Vec<SegmentRow>,
        /// Ask for another id than the stored one.
        other_id: Option<String>,
    },
    MongoSession(Vec<(Key, Value)>),
    MongoSegment(Vec<(Key, Value)>),
    /// A valid document with one byte changed.
    MongoDamaged {
        fields: Vec<(Key, Value)>,
        position: u16,
        byte: u8,
    },
    MongoBytes(Vec<u8>),
}

/// A value of any SQLite storage class, or one of the shapes the store writes.
#[derive(Arbitrary, Debug)]
enum Column {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Status(u8),
    WordsJson(Vec<JsonWord>),
}

#[derive(Arbitrary, Debug)]
struct SessionRow {
    id: String,
    started_at_ms: Column,
    ended_at_ms: Column,
    client_addr: Column,
    audio_ms: Column,
    close_reason: Column,
    status: Column,
}

#[derive(Arbitrary, Debug)]
struct SegmentRow {
    /// Another session's segment otherwise.
    same_session: bool,
    segment_index: Column,
    text: Column,
    start_ms: Column,
    end_ms: Column,
    confidence: Column,
    words_json: Column,
}

/// A word of `words_json` whose fields may be missing or of the wrong JSON type.
#[derive(Arbitrary, Debug)]
struct JsonWord {
    word: Option<Json>,
    start_ms: Option<Json>,
    end_ms: Option<Json>,
    confidence: Option<Json>,
    extra: Option<(String, Json)>,
}

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Integer(i64),
    Unsigned(u64),
    Float(f64),
    String(String),
}

#[derive(Arbitrary, Debug)]
enum Key {
    Known(u8),
    Other(String),
}

const DOCUMENT_KEYS: [&str; 15] = [
    "_id",
    "started_at_ms",
    "ended_at_ms",
    "client_addr",
    "audio_ms",
    "close_reason",
    "status",
    "session_id",
    "index",
    "text",
    "start_ms",
    "end_ms",
    "confidence",
    "words",
    "word",
];

#[derive(Arbitrary, Debug)]
enum Value {
    Double(f64),
    String(String),
    Status(u8),
    Boolean(bool),
    Null,
    Int32(i32),
    Int64(i64),
    DateTime(i64),
    Timestamp(u32, u32),
    Binary(u8, Vec<u8>),
    ObjectId([u8; 12]),
    Decimal128([u8; 16]),
    Undefined,
    MinKey,
    MaxKey,
    Array(Vec<Scalar>),
    /// Words: an array of documents.
    Documents(Vec<Vec<(Key, Scalar)>>),
}

/// The values nested inside arrays and documents.
#[derive(Arbitrary, Debug)]
enum Scalar {
    Double(f64),
    String(String),
    Int32(i32),
    Int64(i64),
    Boolean(bool),
    Null,
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input {
        Input::Sqlite {
            session,
            segments,
            other_id,
        } => check_sqlite(&session, &segments, other_id.as_deref()),
        Input::MongoSession(fields) => check_session_document(&document(&fields)),
        Input::MongoSegment(fields) => check_segment_document(&document(&fields)),
        Input::MongoDamaged {
            fields,
            position,
            byte,
        } => {
            let Ok(mut bytes) = document(&fields).to_vec() else {
                return;
            };
            let position = usize::from(position) % bytes.len();
            bytes[position] = byte;
            check_bytes(&bytes);
        }
        Input::MongoBytes(bytes) => check_bytes(&bytes),
    }
});

fn check_sqlite(session: &SessionRow, segments: &[SegmentRow], other_id: Option<&str>) {
    DATABASE.with_borrow_mut(|connection| {
        connection
            .execute_batch("DELETE FROM sessions; DELETE FROM segments;")
            .expect("emptied");
        let inserted = connection.execute(
            "INSERT INTO sessions (id, started_at_ms, ended_at_ms, client_addr, audio_ms, close_reason, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                session.id,
                sql(&session.started_at_ms),
                sql(&session.ended_at_ms),
                sql(&session.client_addr),
                sql(&session.audio_ms),
                sql(&session.close_reason),
                sql(&session.status),
            ],
        );
        // A NOT NULL column given NULL: nothing the store could ever read back.
        if inserted.is_err() {
            return;
        }
        for segment in segments {
            let session_id = if segment.same_session {
                session.id.clone()
            } else {
                format!("{}-other", session.id)
            };
            // Duplicate keys and NULLs are refused by the schema, as they would be for any writer.
            let _ = connection.execute(
                "INSERT INTO segments (session_id, segment_index, text, start_ms, end_ms, confidence, words_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    session_id,
                    sql(&segment.segment_index),
                    sql(&segment.text),
                    sql(&segment.start_ms),
                    sql(&segment.end_ms),
                    sql(&segment.confidence),
                    sql(&segment.words_json),
                ],
            );
        }
        let id = other_id.unwrap_or(&session.id);
        match sqlite_read_session(connection, id) {
            Ok(Some(transcript)) => {
                assert_eq!(id, session.id);
                check_transcript(&transcript, id);
            }
            Ok(None) => assert_ne!(id, session.id, "the stored session was not found"),
            Err(StoreError::Corrupt { .. } | StoreError::Sqlite(_)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    });
}

fn check_transcript(transcript: &SessionWithTranscript, id: &str) {
    assert_eq!(transcript.session.id, id);
    let status = transcript.session.status;
    assert_eq!(SessionStatus::parse(status.as_str()), Some(status));
    assert!(transcript.segments.iter().all(|s| s.session_id == id));
    assert!(
        transcript
            .segments
            .windows(2)
            .all(|pair| pair[0].index < pair[1].index),
        "segments out of order"
    );
    // The transcript API serves it as JSON.
    serde_json::to_string(transcript).expect("a transcript serialises");
}

fn check_session_document(document: &Document) {
    let Ok(bytes) = document.to_vec() else {
        return;
    };
    if let Ok(session) = mongo_session(&bytes) {
        assert_eq!(document.get_str("_id").ok(), Some(session.id.as_str()));
        assert_eq!(
            document.get_str("status").ok(),
            Some(session.status.as_str())
        );
        serde_json::to_string(&session).expect("a session serialises");
    }
    check_segment_bytes(&bytes);
}

fn check_segment_document(document: &Document) {
    let Ok(bytes) = document.to_vec() else {
        return;
    };
    if let Ok(segment) = mongo_segment(&bytes) {
        assert_eq!(
            document.get_str("session_id").ok(),
            Some(segment.session_id.as_str())
        );
        assert_eq!(
            document.get_array("words").map(Vec::len).ok(),
            Some(segment.words.len())
        );
    }
    let _ = mongo_session(&bytes);
}

fn check_bytes(bytes: &[u8]) {
    if let Ok(session) = mongo_session(bytes) {
        assert_eq!(
            SessionStatus::parse(session.status.as_str()),
            Some(session.status)
        );
    }
    check_segment_bytes(bytes);
}

fn check_segment_bytes(bytes: &[u8]) {
    if let Ok(segment) = mongo_segment(bytes) {
        serde_json::to_string(&segment).expect("a segment serialises");
    }
}

fn status_name(choice: u8) -> String {
    match choice % 6 {
        0 => "active".into(),
        1 => "completed".into(),
        2 => "failed".into(),
        3 => "interrupted".into(),
        4 => "Active".into(),
        _ => String::new(),
    }
}

fn sql(column: &Column) -> SqlValue {
    match column {
        Column::Null => SqlValue::Null,
        Column::Integer(value) => SqlValue::Integer(*value),
        Column::Real(value) => SqlValue::Real(*value),
        Column::Text(text) => SqlValue::Text(text.clone()),
        Column::Blob(bytes) => SqlValue::Blob(bytes.clone()),
        Column::Status(choice) => SqlValue::Text(status_name(*choice)),
        Column::WordsJson(words) => SqlValue::Text(words_json(words)),
    }
}

fn words_json(words: &[JsonWord]) -> String {
    let words: Vec<serde_json::Value> = words
        .iter()
        .map(|word| {
            let mut object = serde_json::Map::new();
            for (key, value) in [
                ("word", &word.word),
                ("start_ms", &word.start_ms),
                ("end_ms", &word.end_ms),
                ("confidence", &word.confidence),
            ] {
                if let Some(value) = value {
                    object.insert(key.into(), json(value));
                }
            }
            if let Some((key, value)) = &word.extra {
                object.insert(key.clone(), json(value));
            }
            serde_json::Value::Object(object)
        })
        .collect();
    serde_json::Value::Array(words).to_string()
}

fn json(value: &Json) -> serde_json::Value {
    match value {
        Json::Null => serde_json::Value::Null,
        Json::Bool(value) => (*value).into(),
        Json::Integer(value) => (*value).into(),
        Json::Unsigned(value) => (*value).into(),
        // Not finite: null, as serde_json writes it.
        Json::Float(value) => (*value).into(),
        Json::String(value) => value.clone().into(),
    }
}

fn key(key: &Key) -> String {
    match key {
        Key::Known(index) => DOCUMENT_KEYS[usize::from(*index) % DOCUMENT_KEYS.len()].into(),
        Key::Other(name) => name.clone(),
    }
}

fn document(fields: &[(Key, Value)]) -> Document {
    let mut document = Document::new();
    for (name, value) in fields {
        document.insert(key(name), bson_value(value));
    }
    document
}

fn bson_value(value: &Value) -> Bson {
    match value {
        Value::Double(value) => Bson::Double(*value),
        Value::String(value) => Bson::String(value.clone()),
        Value::Status(choice) => Bson::String(status_name(*choice)),
        Value::Boolean(value) => Bson::Boolean(*value),
        Value::Null => Bson::Null,
        Value::Int32(value) => Bson::Int32(*value),
        Value::Int64(value) => Bson::Int64(*value),
        Value::DateTime(millis) => Bson::DateTime(bson::DateTime::from_millis(*millis)),
        Value::Timestamp(time, increment) => Bson::Timestamp(bson::Timestamp {
            time: *time,
            increment: *increment,
        }),
        Value::Binary(subtype, bytes) => Bson::Binary(bson::Binary {
            subtype: (*subtype).into(),
            bytes: bytes.clone(),
        }),
        Value::ObjectId(bytes) => Bson::ObjectId(bson::oid::ObjectId::from_bytes(*bytes)),
        Value::Decimal128(bytes) => Bson::Decimal128(bson::Decimal128::from_bytes(*bytes)),
        Value::Undefined => Bson::Undefined,
        Value::MinKey => Bson::MinKey,
        Value::MaxKey => Bson::MaxKey,
        Value::Array(values) => Bson::Array(values.iter().map(scalar).collect()),
        Value::Documents(documents) => Bson::Array(
            documents
                .iter()
                .map(|fields| {
                    let mut document = Document::new();
                    for (name, value) in fields {
                        document.insert(key(name), scalar(value));
                    }
                    Bson::Document(document)
                })
                .collect(),
        ),
    }
}

fn scalar(value: &Scalar) -> Bson {
    match value {
        Scalar::Double(value) => Bson::Double(*value),
        Scalar::String(value) => Bson::String(value.clone()),
        Scalar::Int32(value) => Bson::Int32(*value),
        Scalar::Int64(value) => Bson::Int64(*value),
        Scalar::Boolean(value) => Bson::Boolean(*value),
        Scalar::Null => Bson::Null,
    }
}

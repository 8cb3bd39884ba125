//! The behaviour every [`TranscriptStore`] backend must show, written once and run against each.

use earshot_store::{
    ApiKeyRecord, SegmentRecord, SessionEnd, SessionRecord, SessionStatus, SessionWithTranscript,
    StoreError, WordRecord,
};

use super::Fixture;

/// A realistic epoch time in milliseconds, well past `i32::MAX`, so a backend that narrows integers fails.
const T0_MS: i64 = 1_764_000_000_000;

fn session(id: &str, started_at_ms: i64) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        started_at_ms,
        ended_at_ms: None,
        client_addr: "203.0.113.7:51234".to_owned(),
        audio_ms: 0,
        close_reason: None,
        status: SessionStatus::Active,
    }
}

fn segment(session_id: &str, index: i32, text: &str) -> SegmentRecord {
    let start_ms = i64::from(index) * 2000;
    let words = text
        .split_whitespace()
        .enumerate()
        .map(|(word_idx, word)| {
            let word_start_ms = start_ms + 300 * word_idx as i64;
            WordRecord {
                word: word.to_owned(),
                start_ms: word_start_ms,
                end_ms: word_start_ms + 250,
                confidence: 0.5 + 0.125 * (word_idx % 4) as f32,
            }
        })
        .collect();
    SegmentRecord {
        session_id: session_id.to_owned(),
        index,
        text: text.to_owned(),
        start_ms,
        end_ms: start_ms + 1800,
        confidence: 0.875,
        words,
    }
}

fn end(status: SessionStatus, close_reason: &str) -> SessionEnd {
    SessionEnd {
        ended_at_ms: T0_MS + 61_000,
        audio_ms: 60_250,
        close_reason: close_reason.to_owned(),
        status,
    }
}

fn ids(sessions: &[SessionRecord]) -> Vec<&str> {
    sessions.iter().map(|session| session.id.as_str()).collect()
}

pub async fn round_trips_a_session_with_segments_and_words(fixture: &Fixture) {
    let store = fixture.open().await;
    assert_eq!(store.backend(), fixture.backend);
    let started = session("round-trip", T0_MS);
    let first = segment("round-trip", 0, "hello there");
    // Non-ASCII text and an f32 that is not a short decimal must come back bit for bit.
    let mut second = segment("round-trip", 1, "ça marche très bien — 東京");
    second.confidence = 0.1;
    second.words[0].start_ms = 3_000_000_000_000;
    store.create_session(&started).await.unwrap();
    store.append_segment(&first).await.unwrap();
    store.append_segment(&second).await.unwrap();
    let finished = end(SessionStatus::Completed, "normal");
    store.finish_session("round-trip", &finished).await.unwrap();

    let loaded = store
        .get_session("round-trip")
        .await
        .unwrap()
        .expect("session stored");

    let expected = SessionWithTranscript {
        session: SessionRecord {
            ended_at_ms: Some(finished.ended_at_ms),
            audio_ms: finished.audio_ms,
            close_reason: Some("normal".to_owned()),
            status: SessionStatus::Completed,
            ..started
        },
        segments: vec![first, second],
    };
    assert_eq!(loaded, expected);
}

pub async fn returns_segments_ordered_by_index(fixture: &Fixture) {
    let store = fixture.open().await;
    store
        .create_session(&session("ordered", T0_MS))
        .await
        .unwrap();
    // 10 after 2 catches an ordering by text; appending out of order catches ordering by insertion.
    for index in [10, 2, 0, 1] {
        store
            .append_segment(&segment("ordered", index, &format!("segment {index}")))
            .await
            .unwrap();
    }
    // Another session's segments must not leak in.
    store
        .create_session(&session("other", T0_MS))
        .await
        .unwrap();
    store
        .append_segment(&segment("other", 3, "not mine"))
        .await
        .unwrap();

    let loaded = store
        .get_session("ordered")
        .await
        .unwrap()
        .expect("session stored");

    let indices: Vec<i32> = loaded
        .segments
        .iter()
        .map(|segment| segment.index)
        .collect();
    assert_eq!(indices, [0, 1, 2, 10]);
    assert!(
        loaded
            .segments
            .iter()
            .all(|segment| segment.session_id == "ordered")
    );
    assert_eq!(loaded.segments[3].text, "segment 10");
}

pub async fn keeps_one_segment_when_the_same_index_is_appended_twice(fixture: &Fixture) {
    let store = fixture.open().await;
    store
        .create_session(&session("retried", T0_MS))
        .await
        .unwrap();
    let original = segment("retried", 0, "first write");
    store.append_segment(&original).await.unwrap();
    store.append_segment(&original).await.unwrap();
    store
        .append_segment(&segment("retried", 0, "a different second write"))
        .await
        .unwrap();
    store
        .append_segment(&segment("retried", 1, "next"))
        .await
        .unwrap();

    let loaded = store
        .get_session("retried")
        .await
        .unwrap()
        .expect("session stored");

    assert_eq!(loaded.segments.len(), 2, "{:?}", loaded.segments);
    assert_eq!(
        loaded.segments[0], original,
        "the first write for an index wins"
    );
}

pub async fn creating_an_existing_session_again_changes_nothing(fixture: &Fixture) {
    let store = fixture.open().await;
    let original = session("created-twice", T0_MS);
    store.create_session(&original).await.unwrap();
    store
        .finish_session("created-twice", &end(SessionStatus::Completed, "normal"))
        .await
        .unwrap();
    let before = store.get_session("created-twice").await.unwrap();

    // A create retried after the session already finished must not reset it to active.
    store.create_session(&original).await.unwrap();
    let mut changed = session("created-twice", T0_MS + 5);
    changed.client_addr = "198.51.100.1:1".to_owned();
    store.create_session(&changed).await.unwrap();

    assert_eq!(store.get_session("created-twice").await.unwrap(), before);
    assert_eq!(store.list_sessions(10, None).await.unwrap().len(), 1);
}

pub async fn lists_sessions_newest_first_with_limit_and_before_ms(fixture: &Fixture) {
    let store = fixture.open().await;
    // Created out of order; "tie-a" and "tie-b" start at the same millisecond.
    for (id, offset_ms) in [
        ("s3", 3000),
        ("s1", 1000),
        ("s5", 5000),
        ("tie-a", 4000),
        ("s2", 2000),
        ("tie-b", 4000),
    ] {
        store
            .create_session(&session(id, T0_MS + offset_ms))
            .await
            .unwrap();
    }

    let all = store.list_sessions(100, None).await.unwrap();
    assert_eq!(ids(&all), ["s5", "tie-b", "tie-a", "s3", "s2", "s1"]);
    assert_eq!(all[0], session("s5", T0_MS + 5000));

    let first_page = store.list_sessions(3, None).await.unwrap();
    assert_eq!(ids(&first_page), ["s5", "tie-b", "tie-a"]);
    // Paging by the last start time seen: strictly before it.
    let second_page = store
        .list_sessions(3, Some(first_page[2].started_at_ms))
        .await
        .unwrap();
    assert_eq!(ids(&second_page), ["s3", "s2", "s1"]);
    let beyond = store.list_sessions(3, Some(T0_MS + 1000)).await.unwrap();
    assert!(beyond.is_empty(), "{beyond:?}");

    assert!(store.list_sessions(0, None).await.unwrap().is_empty());
    assert_eq!(
        store.list_sessions(usize::MAX, None).await.unwrap().len(),
        6
    );
}

pub async fn get_of_an_unknown_id_is_none(fixture: &Fixture) {
    let store = fixture.open().await;
    assert_eq!(store.get_session("never-created").await.unwrap(), None);
    store
        .create_session(&session("exists", T0_MS))
        .await
        .unwrap();
    assert_eq!(store.get_session("never-created").await.unwrap(), None);
    assert_eq!(store.get_session("").await.unwrap(), None);
}

pub async fn stores_status_and_close_reason(fixture: &Fixture) {
    let store = fixture.open().await;
    for (offset_ms, id) in [
        (1, "active"),
        (2, "completed"),
        (3, "failed"),
        (4, "closed"),
    ] {
        store
            .create_session(&session(id, T0_MS + offset_ms))
            .await
            .unwrap();
    }
    store
        .finish_session("completed", &end(SessionStatus::Completed, "normal"))
        .await
        .unwrap();
    store
        .finish_session("failed", &end(SessionStatus::Failed, "engine_failure"))
        .await
        .unwrap();
    store
        .finish_session("closed", &end(SessionStatus::Completed, "client_closed"))
        .await
        .unwrap();

    let listed: Vec<(String, SessionStatus, Option<String>, Option<i64>)> = store
        .list_sessions(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|session| {
            (
                session.id,
                session.status,
                session.close_reason,
                session.ended_at_ms,
            )
        })
        .collect();
    let ended = Some(T0_MS + 61_000);
    let expected = vec![
        (
            "closed".to_owned(),
            SessionStatus::Completed,
            Some("client_closed".to_owned()),
            ended,
        ),
        (
            "failed".to_owned(),
            SessionStatus::Failed,
            Some("engine_failure".to_owned()),
            ended,
        ),
        (
            "completed".to_owned(),
            SessionStatus::Completed,
            Some("normal".to_owned()),
            ended,
        ),
        ("active".to_owned(), SessionStatus::Active, None, None),
    ];
    assert_eq!(listed, expected);
    let failed = store
        .get_session("failed")
        .await
        .unwrap()
        .expect("session stored")
        .session;
    assert_eq!(failed.status, SessionStatus::Failed);
    assert_eq!(failed.audio_ms, 60_250);
}

pub async fn finishing_an_unknown_session_is_session_not_found(fixture: &Fixture) {
    let store = fixture.open().await;
    let error = store
        .finish_session("never-created", &end(SessionStatus::Completed, "normal"))
        .await
        .expect_err("finishing an unknown session must fail");
    assert!(
        matches!(&error, StoreError::SessionNotFound { id } if id == "never-created"),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(store.get_session("never-created").await.unwrap(), None);
}

pub async fn keeps_a_segment_appended_before_its_session(fixture: &Fixture) {
    let store = fixture.open().await;
    let early = segment("late-session", 0, "arrived first");
    store.append_segment(&early).await.unwrap();
    assert_eq!(store.get_session("late-session").await.unwrap(), None);

    store
        .create_session(&session("late-session", T0_MS))
        .await
        .unwrap();

    let loaded = store
        .get_session("late-session")
        .await
        .unwrap()
        .expect("session stored");
    assert_eq!(loaded.segments, [early]);
}

pub async fn stores_non_finite_confidence_as_zero(fixture: &Fixture) {
    let store = fixture.open().await;
    store.create_session(&session("nan", T0_MS)).await.unwrap();
    let mut odd = segment("nan", 0, "odd scores");
    odd.confidence = f32::NAN;
    odd.words[1].confidence = f32::NEG_INFINITY;
    store.append_segment(&odd).await.unwrap();

    let loaded = store
        .get_session("nan")
        .await
        .unwrap()
        .expect("session stored");

    assert_eq!(loaded.segments[0].confidence, 0.0);
    assert_eq!(
        loaded.segments[0].words[0].confidence,
        odd.words[0].confidence
    );
    assert_eq!(loaded.segments[0].words[1].confidence, 0.0);
}

pub async fn data_survives_reopening_the_store(fixture: &Fixture) {
    let store = fixture.open().await;
    store
        .create_session(&session("durable", T0_MS))
        .await
        .unwrap();
    store
        .append_segment(&segment("durable", 0, "still here"))
        .await
        .unwrap();
    store
        .finish_session("durable", &end(SessionStatus::Completed, "normal"))
        .await
        .unwrap();
    let written = store
        .get_session("durable")
        .await
        .unwrap()
        .expect("session stored");
    drop(store);

    let reopened = fixture.open().await;

    assert_eq!(
        reopened.get_session("durable").await.unwrap(),
        Some(written)
    );
    // Opening an existing database must not fail on its existing schema or indexes, nor lose idempotency.
    reopened
        .append_segment(&segment("durable", 0, "still here"))
        .await
        .unwrap();
    assert_eq!(
        reopened
            .get_session("durable")
            .await
            .unwrap()
            .unwrap()
            .segments
            .len(),
        1
    );
}

pub async fn ping_succeeds(fixture: &Fixture) {
    let store = fixture.open().await;
    store.ping().await.unwrap();
}

fn api_key(name: &str, key_hash: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        name: name.to_owned(),
        key_hash: key_hash.to_owned(),
        scopes: vec!["stream".to_owned(), "read".to_owned()],
        max_sessions: Some(3),
        created_at_ms: T0_MS,
        last_used_ms: None,
    }
}

pub async fn stores_api_keys_by_name_and_finds_them_by_hash(fixture: &Fixture) {
    let store = fixture.open().await;
    let mut admin = api_key("ops", &"b".repeat(64));
    admin.scopes = vec!["admin".to_owned()];
    admin.max_sessions = None;
    store.create_key(&admin).await.unwrap();
    let laptop = api_key("laptop", &"a".repeat(64));
    store.create_key(&laptop).await.unwrap();

    assert_eq!(
        store.list_keys().await.unwrap(),
        vec![laptop.clone(), admin.clone()]
    );
    assert_eq!(store.find_key(&"a".repeat(64)).await.unwrap(), Some(laptop));
    assert_eq!(store.find_key(&"b".repeat(64)).await.unwrap(), Some(admin));
    assert_eq!(store.find_key(&"c".repeat(64)).await.unwrap(), None);
    // Keys survive reopening the store.
    drop(store);
    assert_eq!(fixture.open().await.list_keys().await.unwrap().len(), 2);
}

pub async fn a_key_name_is_taken_once(fixture: &Fixture) {
    let store = fixture.open().await;
    let first = api_key("laptop", &"a".repeat(64));
    store.create_key(&first).await.unwrap();
    let error = store
        .create_key(&api_key("laptop", &"d".repeat(64)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::KeyExists { name } if name == "laptop"),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(store.list_keys().await.unwrap(), vec![first]);
    assert_eq!(store.find_key(&"d".repeat(64)).await.unwrap(), None);
}

pub async fn records_the_latest_use_of_a_key(fixture: &Fixture) {
    let store = fixture.open().await;
    store
        .create_key(&api_key("laptop", &"a".repeat(64)))
        .await
        .unwrap();
    store.touch_key("laptop", T0_MS + 5_000).await.unwrap();
    // An older use, arriving late, does not move it back; an unknown name is no error.
    store.touch_key("laptop", T0_MS + 1_000).await.unwrap();
    store.touch_key("nobody", T0_MS + 9_000).await.unwrap();
    let found = store.find_key(&"a".repeat(64)).await.unwrap().unwrap();
    assert_eq!(found.last_used_ms, Some(T0_MS + 5_000));
    store.touch_key("laptop", T0_MS + 7_000).await.unwrap();
    let listed = store.list_keys().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_ms, Some(T0_MS + 7_000));
}

pub async fn a_revoked_key_is_gone(fixture: &Fixture) {
    let store = fixture.open().await;
    store
        .create_key(&api_key("laptop", &"a".repeat(64)))
        .await
        .unwrap();
    store
        .create_key(&api_key("phone", &"b".repeat(64)))
        .await
        .unwrap();
    assert!(store.revoke_key("laptop").await.unwrap());
    assert!(!store.revoke_key("laptop").await.unwrap());
    assert!(!store.revoke_key("nobody").await.unwrap());
    assert_eq!(store.find_key(&"a".repeat(64)).await.unwrap(), None);
    let names: Vec<String> = store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|key| key.name)
        .collect();
    assert_eq!(names, ["phone"]);
    // The name is free again, for a new key.
    store
        .create_key(&api_key("laptop", &"c".repeat(64)))
        .await
        .unwrap();
    assert!(store.find_key(&"c".repeat(64)).await.unwrap().is_some());
}

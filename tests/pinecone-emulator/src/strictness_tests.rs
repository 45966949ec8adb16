//! The Pinecone emulator is only useful if it is as strict as Pinecone: these pin its rules.

use serde_json::json;

use std::collections::{BTreeMap, HashMap};

use crate::{apply_update, validate_upsert, Stored};

fn body(vectors: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "vectors": vectors, "namespace": "ns" })).expect("json")
}

#[test]
fn a_well_formed_upsert_is_accepted() {
    let (ns, vectors) = validate_upsert(
        &body(json!([{ "id": "a", "values": [0.1, 0.2], "metadata": { "label": "car", "score": 0.9, "tags": ["x"], "ok": true } }])),
        2,
    )
    .expect("valid");
    assert_eq!((ns.as_str(), vectors.len()), ("ns", 1));
}

#[test]
fn upserts_breaking_a_documented_limit_are_rejected() {
    let v = |id: &str| json!({ "id": id, "values": [0.1, 0.2] });
    let too_many: Vec<_> = (0..1001).map(|i| v(&i.to_string())).collect();
    let cases = [
        body(json!([])),
        body(json!(too_many)),
        body(json!([v("a"), v("a")])),
        body(json!([{ "id": "", "values": [0.1, 0.2] }])),
        body(json!([{ "id": "x".repeat(513), "values": [0.1, 0.2] }])),
        body(json!([{ "id": "a", "values": [0.1, 0.2, 0.3] }])),
        body(json!([{ "id": "a", "values": [0.0, 0.0] }])),
        body(json!([{ "id": "a", "values": [0.1, 0.2], "metadata": { "nested": { "a": 1 } } }])),
        body(json!([{ "id": "a", "values": [0.1, 0.2], "metadata": { "n": null } }])),
        body(json!([{ "id": "a", "values": [0.1, 0.2], "metadata": { "nums": [1, 2] } }])),
        body(json!([{ "id": "a", "values": [0.1, 0.2], "metadata": { "big": "x".repeat(41 * 1024) } }])),
        vec![b' '; 2 * 1024 * 1024 + 1],
    ];
    for (i, case) in cases.iter().enumerate() {
        assert!(validate_upsert(case, 2).is_err(), "case {i} should be rejected");
    }
}

fn one_record() -> HashMap<String, BTreeMap<String, Stored>> {
    let metadata = json!({ "label": "car", "camera": "gate" }).as_object().expect("an object").clone();
    let stored = Stored { values: vec![0.1, 0.2], metadata };
    HashMap::from([("ns".to_owned(), BTreeMap::from([("a".to_owned(), stored)]))])
}

#[test]
fn an_update_sets_metadata_fields_by_id_or_by_filter() {
    let mut namespaces = one_record();
    let answer = apply_update(&mut namespaces, &json!({ "id": "a", "setMetadata": { "user_label": "our van" }, "namespace": "ns" }), 2);
    assert_eq!(answer, Ok(json!({})), "by id, no count");
    let metadata = &namespaces["ns"]["a"].metadata;
    assert_eq!((metadata["user_label"].as_str(), metadata["label"].as_str()), (Some("our van"), Some("car")), "other fields stay");
    let absent = apply_update(&mut namespaces, &json!({ "id": "b", "setMetadata": { "x": "y" }, "namespace": "ns" }), 2);
    assert_eq!(absent, Ok(json!({})), "an id that is not stored changes nothing");
    assert!(!namespaces["ns"].contains_key("b"));
    let by_filter =
        json!({ "filter": { "camera": { "$eq": "gate" } }, "setMetadata": { "seen": true }, "namespace": "ns", "dryRun": true });
    assert_eq!(apply_update(&mut namespaces, &by_filter, 2), Ok(json!({ "matchedRecords": 1 })));
    assert!(!namespaces["ns"]["a"].metadata.contains_key("seen"), "a dry run changes nothing");
}

#[test]
fn updates_breaking_a_documented_rule_are_rejected_and_change_nothing() {
    for case in [
        json!({ "setMetadata": { "x": "y" } }),
        json!({ "id": "a", "filter": {}, "setMetadata": { "x": "y" } }),
        json!({ "id": "", "setMetadata": { "x": "y" } }),
        json!({ "id": "a", "values": [0.1], "namespace": "ns" }),
        json!({ "id": "a", "values": [0.0, 0.0], "namespace": "ns" }),
        json!({ "id": "a", "setMetadata": { "n": null }, "namespace": "ns" }),
        json!({ "id": "a", "setMetadata": { "big": "x".repeat(41 * 1024) }, "namespace": "ns" }),
        json!({ "id": "a", "setMetadata": "x", "namespace": "ns" }),
        json!({ "id": "a", "set_metadata": { "x": "y" }, "namespace": "ns" }),
    ] {
        let mut namespaces = one_record();
        assert!(apply_update(&mut namespaces, &case, 2).is_err(), "{case}");
        assert_eq!(namespaces["ns"]["a"].metadata.len(), 2, "{case}");
    }
}

//! The Pinecone emulator is only useful if it is as strict as Pinecone: these pin its rules.

use serde_json::json;

use crate::validate_upsert;

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

//! `POST /query`: the nearest stored vectors to a vector (or to a stored vector's id), by cosine
//! similarity, with Pinecone's metadata filter language, strict about what the spec rejects.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::Stored;

const MAX_TOP_K: u64 = 10_000;

/// Answers a query body against the stored namespaces, or says why Pinecone would answer 400.
pub fn query(
    body: &[u8],
    dimension: usize,
    namespaces: &std::collections::HashMap<String, BTreeMap<String, Stored>>,
) -> Result<Value, String> {
    let request: Map<String, Value> = serde_json::from_slice(body).map_err(|e| format!("body must be a JSON object: {e}"))?;
    let top_k = request.get("topK").and_then(Value::as_u64).ok_or("topK is required and must be a positive integer")?;
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(format!("topK must be between 1 and {MAX_TOP_K}"));
    }
    let namespace = match request.get("namespace") {
        None => "",
        Some(Value::String(s)) if s == "__default__" => "",
        Some(Value::String(s)) => s,
        Some(_) => return Err("namespace must be a string".into()),
    };
    let empty = BTreeMap::new();
    let stored = namespaces.get(namespace).unwrap_or(&empty);
    let vector = match (request.get("vector"), request.get("id")) {
        (Some(_), Some(_)) => return Err("a query takes one of vector or id, not both".into()),
        (Some(Value::Array(values)), None) => {
            let values: Vec<f32> =
                values.iter().map(|v| v.as_f64().map(|f| f as f32)).collect::<Option<_>>().ok_or("vector must hold numbers")?;
            if values.len() != dimension {
                return Err(format!("Vector dimension {} does not match the dimension of the index {dimension}", values.len()));
            }
            values
        }
        (None, Some(Value::String(id))) => stored.get(id).map(|s| s.values.clone()).ok_or_else(|| format!("no vector with id {id:?}"))?,
        _ => return Err("a query needs vector (numbers) or id (a string)".into()),
    };
    let filter = match request.get("filter") {
        None => None,
        Some(Value::Object(f)) => Some(f),
        Some(_) => return Err("filter must be an object".into()),
    };
    let include_metadata = request.get("includeMetadata").and_then(Value::as_bool).unwrap_or(false);
    let include_values = request.get("includeValues").and_then(Value::as_bool).unwrap_or(false);
    let mut scored = Vec::new();
    for (id, s) in stored {
        if let Some(f) = filter {
            if !matches(f, &s.metadata)? {
                continue;
            }
        }
        scored.push((cosine(&vector, &s.values), id, s));
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let matches: Vec<Value> = scored
        .into_iter()
        .take(top_k as usize)
        .map(|(score, id, s)| {
            let mut m = json!({ "id": id, "score": score });
            if include_metadata {
                m["metadata"] = Value::Object(s.metadata.clone());
            }
            if include_values {
                m["values"] = json!(s.values);
            }
            m
        })
        .collect();
    Ok(json!({ "matches": matches, "namespace": namespace, "usage": { "readUnits": 1 } }))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norms = a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norms == 0.0 {
        0.0
    } else {
        dot / norms
    }
}

/// Whether `metadata` passes `filter`: `{field: value}` (equality), `{field: {$op: value}}` with
/// $eq $ne $gt $gte $lt $lte $in $nin $exists, and `$and` / `$or` of filters. Anything else is 400.
pub fn matches(filter: &Map<String, Value>, metadata: &Map<String, Value>) -> Result<bool, String> {
    for (key, condition) in filter {
        let ok = match key.as_str() {
            "$and" | "$or" => {
                let parts =
                    condition.as_array().filter(|p| !p.is_empty()).ok_or_else(|| format!("{key} takes a non-empty array of filters"))?;
                let results = parts
                    .iter()
                    .map(|p| p.as_object().ok_or_else(|| format!("{key} takes filter objects")).and_then(|p| matches(p, metadata)))
                    .collect::<Result<Vec<bool>, String>>()?;
                if key == "$and" {
                    results.iter().all(|r| *r)
                } else {
                    results.iter().any(|r| *r)
                }
            }
            op if op.starts_with('$') => return Err(format!("unknown top-level operator {op}")),
            field => field_matches(field, condition, metadata.get(field))?,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn field_matches(field: &str, condition: &Value, value: Option<&Value>) -> Result<bool, String> {
    let Value::Object(ops) = condition else { return Ok(value.is_some_and(|v| equal(v, condition))) };
    for (op, operand) in ops {
        let ok = match op.as_str() {
            "$eq" => value.is_some_and(|v| equal(v, operand)),
            "$ne" => !value.is_some_and(|v| equal(v, operand)),
            "$gt" | "$gte" | "$lt" | "$lte" => {
                let bound = operand.as_f64().ok_or_else(|| format!("{op} on {field} takes a number"))?;
                value.and_then(Value::as_f64).is_some_and(|v| match op.as_str() {
                    "$gt" => v > bound,
                    "$gte" => v >= bound,
                    "$lt" => v < bound,
                    _ => v <= bound,
                })
            }
            "$in" | "$nin" => {
                let list = operand.as_array().ok_or_else(|| format!("{op} on {field} takes an array"))?;
                let inside = value.is_some_and(|v| list.iter().any(|item| equal(v, item)));
                if op == "$in" {
                    inside
                } else {
                    !inside
                }
            }
            "$exists" => operand.as_bool().ok_or_else(|| format!("$exists on {field} takes a boolean"))? == value.is_some(),
            other => return Err(format!("unknown operator {other} on {field}")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Equality as Pinecone means it: numbers by value, a list field holds the value.
fn equal(value: &Value, wanted: &Value) -> bool {
    match (value, wanted) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(items), w) => items.contains(w),
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("an object")
    }

    #[test]
    fn filters_follow_pinecone_s_operators() {
        let m = meta(json!({ "camera": "gate", "ts": 1000, "label": "car" }));
        let pass = |f: Value| matches(&meta(f), &m);
        assert_eq!(pass(json!({ "camera": "gate" })), Ok(true));
        assert_eq!(pass(json!({ "camera": { "$in": ["yard", "gate"] }, "ts": { "$gte": 1000, "$lte": 1000 } })), Ok(true));
        assert_eq!(pass(json!({ "$and": [{ "label": { "$eq": "car" } }, { "ts": { "$lt": 1000 } }] })), Ok(false));
        assert_eq!(pass(json!({ "$or": [{ "label": "dog" }, { "camera": { "$nin": ["yard"] } }] })), Ok(true));
        assert!(pass(json!({ "camera": { "$regex": "g.*" } })).is_err());
        assert!(pass(json!({ "$not": [] })).is_err());
        assert!(pass(json!({ "ts": { "$gt": "soon" } })).is_err());
    }

    #[test]
    fn queries_the_spec_rejects_are_rejected() {
        let stored = std::collections::HashMap::new();
        for body in [
            json!({ "vector": [1.0, 0.0] }),
            json!({ "topK": 0, "vector": [1.0, 0.0] }),
            json!({ "topK": 10001, "vector": [1.0, 0.0] }),
            json!({ "topK": 3, "vector": [1.0, 0.0, 0.0] }),
            json!({ "topK": 3, "vector": [1.0, 0.0], "id": "a" }),
            json!({ "topK": 3 }),
            json!({ "topK": 3, "vector": [1.0, 0.0], "filter": [] }),
        ] {
            assert!(query(body.to_string().as_bytes(), 2, &stored).is_err(), "{body} should be rejected");
        }
    }
}

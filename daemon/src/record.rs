//! The unit that flows from inference to the index: one embedded object in one frame.

use serde::{Deserialize, Serialize};

/// One detected, cropped and embedded object, as stored in the outbox and upserted to Pinecone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `{device}:{camera}:{frame_ms}:{box}`: deterministic, so a retried upsert overwrites the
    /// same vector instead of adding a second one.
    pub id: String,
    /// The L2-normalised image embedding of the crop.
    pub values: Vec<f32>,
    pub metadata: Metadata,
}

/// What Pinecone stores beside the vector: flat, only strings and numbers (Pinecone's rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub device: String,
    pub camera: String,
    /// When the frame was captured, unix milliseconds.
    pub ts: i64,
    /// Position of the frame in its stream, milliseconds (files: from the start of the file).
    pub pts_ms: u64,
    pub label: String,
    pub score: f32,
    /// The box in pixels of the frame: left, top, width, height.
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub frame_w: u32,
    pub frame_h: u32,
    /// The tracked object this embedding belongs to (`[analysis]`), unique within the camera.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<String>,
    /// The key of the object's crop in the crop store (`[crops]`), when one was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<String>,
    /// The key of the whole frame's snapshot in the crop store (`[snapshots]`), shared by the
    /// frame's records, when one was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// A person's name for the object ([`crate::labels`]): never written by inference; set on
    /// an upsert from the labels on the device, and read back from Pinecone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_label: Option<String>,
}

impl Metadata {
    /// Metadata as an index gives it back, where numbers may have become floats (`10.0`);
    /// `None` when a field Glimpse always writes is missing (a vector another writer stored).
    pub fn from_stored(stored: &serde_json::Map<String, serde_json::Value>) -> Option<Self> {
        let text = |k: &str| stored.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let number = |k: &str| stored.get(k).and_then(|v| v.as_f64());
        let whole = |k: &str| number(k).map(|n| n.round() as u32);
        Some(Self {
            device: text("device")?,
            camera: text("camera")?,
            ts: number("ts")? as i64,
            pts_ms: number("pts_ms").unwrap_or(0.0) as u64,
            label: text("label")?,
            score: number("score")? as f32,
            x: whole("x")?,
            y: whole("y")?,
            w: whole("w")?,
            h: whole("h")?,
            frame_w: whole("frame_w").unwrap_or(0),
            frame_h: whole("frame_h").unwrap_or(0),
            track_id: text("track_id"),
            crop: text("crop"),
            snapshot: text("snapshot"),
            user_label: text("user_label").filter(|l| !l.is_empty()),
        })
    }
}

/// A record fresh from inference, with its crop's JPEG to be stored before it is accepted.
#[derive(Clone, Debug)]
pub struct NewRecord {
    pub record: Record,
    pub crop_jpeg: Option<Vec<u8>>,
    /// The frame's snapshot JPEG, carried by the first of the frame's records only (the others
    /// name the same key).
    pub snapshot_jpeg: Option<Vec<u8>>,
}

/// The record id for box number `box_index` of the frame keyed `frame_ms` (see [`Record::id`]).
pub fn record_id(device: &str, camera: &str, frame_ms: u64, box_index: usize) -> String {
    format!("{device}:{camera}:{frame_ms}:{box_index}")
}

/// A record for unit tests: `id` on camera `camera` at unix ms `ts`, with `values`.
#[cfg(test)]
pub fn test_record(id: &str, camera: &str, ts: i64, values: Vec<f32>) -> Record {
    let metadata = Metadata {
        device: "d".into(),
        camera: camera.into(),
        ts,
        pts_ms: 0,
        label: "person".into(),
        score: 0.9,
        x: 1,
        y: 2,
        w: 3,
        h: 4,
        frame_w: 10,
        frame_h: 10,
        track_id: None,
        crop: None,
        snapshot: None,
        user_label: None,
    };
    Record { id: id.into(), values, metadata }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct_per_box() {
        assert_eq!(record_id("lab-01", "street", 1_700_000_000_123, 2), "lab-01:street:1700000000123:2");
        assert_ne!(record_id("a", "b", 1, 0), record_id("a", "b", 1, 1));
    }
}

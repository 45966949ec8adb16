//! Object events: what the cameras saw, one message per tracked object's start, change and end,
//! for the broker's `{prefix}/{device}/events` topic (docs/mqtt.md).
//!
//! The inference thread keeps one [`TrackLog`] per camera beside its tracker and writes events
//! (and semantic triggers' matches, `triggers.rs`) into a bounded [`Queue`];
//! the MQTT task publishes them, and the event history on the device keeps the tracks. A full queue drops the message and counts it, so inference never
//! waits on the broker. Every `new` gets exactly one `end`: when the track times out, when its
//! camera departs (reload, restart) and when the daemon stops.
//!
//! Time: the update rate limit uses stream time (the frames'); `start_ts` and `end_ts` are the
//! frames' wall-clock capture times in unix ms, for people.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::embed::PixelBox;
use crate::stats::Stats;
use crate::validate::{KeyPath, Problem};

/// A score moved this much since the last published event: worth an `update`.
const SCORE_CHANGE: f32 = 0.1;
/// The box overlaps the last published one less than this: worth an `update`.
const BOX_CHANGE_IOU: f32 = 0.7;

/// `[events]`: object events over MQTT.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct EventsConfig {
    /// Make object events. Default: true when `[mqtt]` or `[http]` is configured.
    pub enabled: Option<bool>,
    /// Only these labels make events (e.g. `["person", "car"]`). Default: every label.
    pub labels: Option<Vec<String>>,
    /// A track makes events once a detection of it scores at least this. Default 0.
    pub min_score: f32,
    /// At most one `update` per track this often, seconds. Default 5.
    pub update_interval_s: f64,
    /// Messages (events and trigger matches) held for the broker while it is away; beyond, new
    /// ones are dropped and counted. Default 1024.
    pub max_queued: usize,
    /// Finished tracks the event history on the device keeps (`[http]`'s events). Default 10000.
    pub history: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { enabled: None, labels: None, min_score: 0.0, update_interval_s: 5.0, max_queued: 1024, history: 10_000 }
    }
}

impl EventsConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if !(0.0..=1.0).contains(&self.min_score) {
            problems.push(Problem::new(at.key("min_score"), "must be a detection score from 0 to 1, e.g. 0.7"));
        }
        if !(1..=1_000_000).contains(&self.history) {
            problems.push(Problem::new(at.key("history"), "must be from 1 to 1000000 tracks, e.g. 10000"));
        }
        if self.max_queued == 0 {
            problems.push(Problem::new(at.key("max_queued"), "must be at least 1, e.g. 1024"));
        }
        if !(self.update_interval_s.is_finite() && self.update_interval_s >= 0.0) {
            problems.push(Problem::new(at.key("update_interval_s"), "must be 0 or more seconds, e.g. 5"));
        }
        for (i, label) in self.labels.iter().flatten().enumerate() {
            if !crate::detect::is_label(label) {
                problems.push(Problem::new(
                    at.key("labels").index(i),
                    format!("{label:?} is not a label the detector knows (COCO names such as \"person\", \"car\")"),
                ));
            }
        }
    }

    /// Whether events are on, given whether anything takes them (`[mqtt]` or `[http]`).
    pub fn is_enabled(&self, taken: bool) -> bool {
        self.enabled.unwrap_or(taken)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    New,
    Update,
    End,
}

/// One object event, as published (docs/mqtt.md, "Object events").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub camera: String,
    pub track_id: String,
    pub label: String,
    pub score: f32,
    pub top_score: f32,
    /// `[x, y, w, h]` in pixels of the frame.
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
    pub frame_w: u32,
    pub frame_h: u32,
    pub start_ts: i64,
    pub end_ts: Option<i64>,
    pub record_id: Option<String>,
    pub crop: Option<String>,
}

/// A semantic trigger fired on a record (docs/mqtt.md, "Semantic triggers").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TriggerMatch {
    pub trigger: String,
    pub record_id: String,
    pub track_id: Option<String>,
    pub camera: String,
    pub ts: i64,
    pub label: String,
    pub similarity: f32,
    pub crop: Option<String>,
}

/// A crop for the broker's retained snapshot topics: a new track's first record's, or the
/// record a trigger matched.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub camera: String,
    pub label: String,
    /// The trigger that matched it; `None` for a new track.
    pub trigger: Option<String>,
    pub jpeg: Arc<Vec<u8>>,
}

/// What the inference thread tells the broker.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Track(TrackEvent),
    Match(TriggerMatch),
    Picture(Picture),
}

/// The inference thread's end of the queues to the MQTT task and to the event history
/// ([`crate::history`]), each there when its consumer is.
#[derive(Clone)]
pub struct Queue {
    tx: Option<mpsc::Sender<Message>>,
    history: Option<std::sync::mpsc::SyncSender<TrackEvent>>,
    stats: Arc<Stats>,
}

/// The MQTT task's end.
pub type Receiver = mpsc::Receiver<Message>;

pub fn queue(bound: usize, stats: Arc<Stats>) -> (Queue, Receiver) {
    let (tx, rx) = mpsc::channel(bound);
    (Queue { tx: Some(tx), history: None, stats }, rx)
}

impl Queue {
    /// A queue to no broker (no `[mqtt]`).
    pub fn without_broker(stats: Arc<Stats>) -> Self {
        Self { tx: None, history: None, stats }
    }

    /// Object events also go to the event history's writer.
    pub fn with_history(mut self, history: std::sync::mpsc::SyncSender<TrackEvent>) -> Self {
        self.history = Some(history);
        self
    }

    /// Queues a message, or drops and counts it when a queue is full (the broker is away, the
    /// history's disk is slow).
    pub fn send(&self, message: Message) {
        if let (Some(history), Message::Track(event)) = (&self.history, &message) {
            if history.try_send(event.clone()).is_err() {
                self.stats.event_dropped();
            }
        }
        if self.tx.as_ref().is_some_and(|tx| tx.try_send(message).is_err()) {
            self.stats.event_dropped();
        }
    }
}

/// What one frame showed of one tracked object.
pub struct Sighting<'a> {
    pub track_id: &'a str,
    pub label: &'static str,
    pub score: f32,
    pub bbox: PixelBox,
    pub frame_w: u32,
    pub frame_h: u32,
    /// The frame's wall-clock capture time, unix ms.
    pub ts: i64,
    pub stream_ms: i64,
    /// The record made of it now, with its crop key: the track was (re-)embedded.
    pub record: Option<(&'a str, Option<&'a str>)>,
}

/// Which tracks make events, and how often they may update.
#[derive(Clone, Debug)]
pub struct TrackFilter {
    labels: Option<Vec<String>>,
    min_score: f32,
    update_interval_ms: i64,
}

impl TrackFilter {
    pub fn new(config: &EventsConfig) -> Self {
        Self { labels: config.labels.clone(), min_score: config.min_score, update_interval_ms: (config.update_interval_s * 1000.0) as i64 }
    }

    fn wants(&self, label: &str, score: f32) -> bool {
        score >= self.min_score && self.labels.as_ref().is_none_or(|labels| labels.iter().any(|l| l == label))
    }
}

struct OpenTrack {
    /// The latest state, in the shape it is published.
    latest: TrackEvent,
    /// The box and score of the last published event, to tell a change worth an update.
    published: (PixelBox, f32),
    published_stream_ms: i64,
    changed: bool,
    last_seen_ts: i64,
}

/// One camera's open tracks, as the broker has heard of them.
pub struct TrackLog {
    filter: TrackFilter,
    open: HashMap<String, OpenTrack>,
}

impl TrackLog {
    pub fn new(filter: TrackFilter) -> Self {
        Self { filter, open: HashMap::new() }
    }

    /// A tracked object seen in a frame: `new` the first time it passes the filter, `update`
    /// when it was re-embedded or moved or rescored enough, at most once per interval.
    pub fn saw(&mut self, camera: &str, s: Sighting<'_>, out: &mut Vec<TrackEvent>) {
        let interval = self.filter.update_interval_ms;
        let Some(track) = self.open.get_mut(s.track_id) else {
            if self.filter.wants(s.label, s.score) {
                let latest = first_event(camera, &s);
                out.push(latest.clone());
                let track = OpenTrack {
                    latest,
                    published: (s.bbox, s.score),
                    published_stream_ms: s.stream_ms,
                    changed: false,
                    last_seen_ts: s.ts,
                };
                self.open.insert(s.track_id.to_owned(), track);
            }
            return;
        };
        let latest = &mut track.latest;
        latest.score = s.score;
        latest.top_score = latest.top_score.max(s.score);
        latest.bbox = [s.bbox.x, s.bbox.y, s.bbox.w, s.bbox.h];
        (latest.frame_w, latest.frame_h) = (s.frame_w, s.frame_h);
        if let Some((record_id, crop)) = s.record {
            latest.record_id = Some(record_id.to_owned());
            latest.crop = crop.map(str::to_owned);
            track.changed = true;
        }
        let (box_then, score_then) = track.published;
        track.changed |= (s.score - score_then).abs() >= SCORE_CHANGE || iou(&s.bbox, &box_then) < BOX_CHANGE_IOU;
        track.last_seen_ts = s.ts;
        if track.changed && s.stream_ms - track.published_stream_ms >= interval {
            out.push(TrackEvent { kind: EventType::Update, ..track.latest.clone() });
            track.published = (s.bbox, s.score);
            track.published_stream_ms = s.stream_ms;
            track.changed = false;
        }
    }

    /// Ends the open tracks the tracker no longer follows.
    pub fn end_unless(&mut self, still_tracked: impl Fn(&str) -> bool, out: &mut Vec<TrackEvent>) {
        let mut ended: Vec<String> = self.open.keys().filter(|id| !still_tracked(id)).cloned().collect();
        ended.sort();
        for id in ended {
            if let Some(track) = self.open.remove(&id) {
                out.push(end_event(track));
            }
        }
    }

    /// Ends every open track: its camera departed or the daemon stops.
    pub fn end_all(&mut self, out: &mut Vec<TrackEvent>) {
        let mut ended: Vec<OpenTrack> = self.open.drain().map(|(_, t)| t).collect();
        ended.sort_by(|a, b| a.latest.track_id.cmp(&b.latest.track_id));
        out.extend(ended.into_iter().map(end_event));
    }
}

fn first_event(camera: &str, s: &Sighting<'_>) -> TrackEvent {
    TrackEvent {
        kind: EventType::New,
        camera: camera.to_owned(),
        track_id: s.track_id.to_owned(),
        label: s.label.to_owned(),
        score: s.score,
        top_score: s.score,
        bbox: [s.bbox.x, s.bbox.y, s.bbox.w, s.bbox.h],
        frame_w: s.frame_w,
        frame_h: s.frame_h,
        start_ts: s.ts,
        end_ts: None,
        record_id: s.record.map(|(id, _)| id.to_owned()),
        crop: s.record.and_then(|(_, crop)| crop.map(str::to_owned)),
    }
}

fn end_event(track: OpenTrack) -> TrackEvent {
    TrackEvent { kind: EventType::End, end_ts: Some(track.last_seen_ts), ..track.latest }
}

fn iou(a: &PixelBox, b: &PixelBox) -> f32 {
    crate::track::tracker::iou(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(update_interval_s: f64) -> TrackLog {
        TrackLog::new(TrackFilter::new(&EventsConfig { update_interval_s, ..EventsConfig::default() }))
    }

    fn seen<'a>(id: &'a str, x: u32, score: f32, stream_ms: i64, record: Option<(&'a str, Option<&'a str>)>) -> Sighting<'a> {
        let bbox = PixelBox { x, y: 10, w: 50, h: 50 };
        Sighting { track_id: id, label: "car", score, bbox, frame_w: 640, frame_h: 480, ts: 1_000 + stream_ms, stream_ms, record }
    }

    fn kinds(events: &[TrackEvent]) -> Vec<(EventType, &str)> {
        events.iter().map(|e| (e.kind, e.track_id.as_str())).collect()
    }

    #[test]
    fn a_track_is_new_once_updates_at_most_once_per_interval_and_ends_once() {
        let mut log = log(5.0);
        let mut out = Vec::new();
        log.saw("gate", seen("t1", 0, 0.9, 0, Some(("r1", Some("c1")))), &mut out);
        log.saw("gate", seen("t1", 0, 0.9, 1_000, None), &mut out);
        log.saw("gate", seen("t1", 0, 0.9, 2_000, Some(("r2", None))), &mut out);
        log.saw("gate", seen("t1", 40, 0.9, 6_000, None), &mut out);
        log.saw("gate", seen("t1", 40, 0.9, 7_000, None), &mut out);
        log.end_unless(|_| false, &mut out);
        log.end_unless(|_| false, &mut out);
        assert_eq!(kinds(&out), [(EventType::New, "t1"), (EventType::Update, "t1"), (EventType::End, "t1")]);
        assert_eq!(out[0].record_id.as_deref(), Some("r1"));
        assert_eq!((out[1].record_id.as_deref(), out[1].crop.as_deref(), out[1].bbox[0]), (Some("r2"), None, 40));
        assert_eq!((out[2].start_ts, out[2].end_ts), (1_000, Some(8_000)));
    }

    #[test]
    fn the_filter_holds_back_tracks_until_they_qualify() {
        let config = EventsConfig { labels: Some(vec!["car".into()]), min_score: 0.8, ..EventsConfig::default() };
        let mut log = TrackLog::new(TrackFilter::new(&config));
        let mut out = Vec::new();
        log.saw("gate", seen("t1", 0, 0.5, 0, None), &mut out);
        assert!(out.is_empty());
        log.saw("gate", seen("t1", 0, 0.85, 100, None), &mut out);
        let person = Sighting { label: "person", ..seen("t2", 0, 0.99, 100, None) };
        log.saw("gate", person, &mut out);
        log.end_all(&mut out);
        assert_eq!(kinds(&out), [(EventType::New, "t1"), (EventType::End, "t1")]);
    }

    #[test]
    fn end_all_ends_every_open_track_exactly_once() {
        let mut log = log(0.0);
        let mut out = Vec::new();
        for id in ["a", "b", "c"] {
            log.saw("gate", seen(id, 0, 0.9, 0, None), &mut out);
        }
        log.end_unless(|id| id != "b", &mut out);
        log.end_all(&mut out);
        log.end_all(&mut out);
        let ends: Vec<_> = out.iter().filter(|e| e.kind == EventType::End).map(|e| e.track_id.as_str()).collect();
        assert_eq!(ends, ["b", "a", "c"]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let stats = Stats::new();
        let (queue, _rx) = queue(10, stats.clone());
        let event = first_event("gate", &seen("t", 0, 0.9, 0, None));
        for _ in 0..13 {
            queue.send(Message::Track(event.clone()));
        }
        assert_eq!(stats.event_number(crate::stats::EventNumber::Dropped), 3);
    }
}

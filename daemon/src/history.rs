//! The event history on the device: the newest tracked objects, for `GET /api/events` and the
//! events page.
//!
//! Owns `{data_dir}/events/history.jsonl`. One thread ([`spawn_writer`]) takes the object events
//! inference makes ([`crate::events`]) from a bounded channel and keeps each track's summary:
//! open tracks in memory, finished ones appended to the file as one JSON line each and synced,
//! so a power cut loses at most the tracks still open and a torn last line, which is skipped.
//! The file is rewritten with the newest `[events] history` tracks once it holds twice that.
//! Readers take a copy under a lock held for microseconds; nothing here reaches the index, the
//! crops or the outbox.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::events::{EventType, TrackEvent};

/// One tracked object, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub camera: String,
    pub track_id: String,
    pub label: String,
    pub top_score: f32,
    /// Wall-clock capture times of its first and last frames, unix ms; no end while it is seen.
    pub start_ts: i64,
    pub end_ts: Option<i64>,
    /// Its first record (an embedding of it), when one was made.
    pub record_id: Option<String>,
    pub crop: Option<String>,
}

impl Track {
    /// Its place in the newest-first order (compared as a [`Cursor`]'s).
    fn order(&self) -> (i64, &str, &str) {
        (self.start_ts, &self.camera, &self.track_id)
    }

    /// Where a page that ends with this track ends.
    pub fn cursor(&self) -> Cursor {
        Cursor { start_ts: self.start_ts, camera: self.camera.clone(), track_id: self.track_id.clone() }
    }

    fn began(e: &TrackEvent) -> Self {
        Self {
            camera: e.camera.clone(),
            track_id: e.track_id.clone(),
            label: e.label.clone(),
            top_score: e.top_score,
            start_ts: e.start_ts,
            end_ts: None,
            record_id: e.record_id.clone(),
            crop: e.crop.clone(),
        }
    }

    fn saw(&mut self, e: &TrackEvent) {
        self.top_score = self.top_score.max(e.top_score);
        if self.record_id.is_none() {
            (self.record_id, self.crop) = (e.record_id.clone(), e.crop.clone());
        }
    }
}

/// Which tracks a reader wants, newest first.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Only these cameras / labels (empty: all).
    pub cameras: Vec<String>,
    pub labels: Vec<String>,
    /// Only tracks that started at or after this, unix ms.
    pub since_ms: Option<i64>,
    /// Only tracks after this one in the newest-first order (the next page: the last shown).
    pub after: Option<Cursor>,
    pub limit: usize,
}

impl EventQuery {
    fn admits(&self, t: &Track) -> bool {
        (self.cameras.is_empty() || self.cameras.contains(&t.camera))
            && (self.labels.is_empty() || self.labels.contains(&t.label))
            && self.since_ms.is_none_or(|s| t.start_ts >= s)
            && self.after.as_ref().is_none_or(|c| t.order() < c.order())
    }
}

/// A place in the newest-first order of tracks: a start, then camera and track id, so that a
/// page ends between tracks of one frame as well. Written `{start_ts}:{camera}:{track_id}`
/// (camera names hold no `:`).
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor {
    pub start_ts: i64,
    pub camera: String,
    pub track_id: String,
}

impl Cursor {
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, ':');
        let start_ts = parts.next()?.parse().ok()?;
        let (camera, track_id) = (parts.next()?.to_owned(), parts.next()?.to_owned());
        Some(Self { start_ts, camera, track_id })
    }

    fn order(&self) -> (i64, &str, &str) {
        (self.start_ts, &self.camera, &self.track_id)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.start_ts, self.camera, self.track_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot open the event history {path}: {source}; check that data_dir is writable")]
    Open { path: PathBuf, source: std::io::Error },
}

pub struct History {
    path: PathBuf,
    max: usize,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// Finished tracks, oldest first, at most `max`.
    finished: VecDeque<Track>,
    /// Tracks still seen, by camera and track id.
    open: HashMap<(String, String), Track>,
    /// Lines in the file.
    lines: usize,
}

impl History {
    /// Opens the history in `data_dir`, keeping the newest `max` finished tracks.
    pub fn open(data_dir: &Path, max: usize) -> Result<Self, HistoryError> {
        let dir = data_dir.join("events");
        let path = dir.join("history.jsonl");
        let open_err = |source| HistoryError::Open { path: path.clone(), source };
        std::fs::create_dir_all(&dir).map_err(open_err)?;
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(open_err(e)),
        };
        let mut kept = Kept::default();
        // Only a power cut's torn last line can fail to parse; it is left out of the rewrite
        // below, so the next line appended starts on a line of its own.
        let torn = !text.is_empty() && !text.ends_with(b"\n");
        for line in text.as_slice().lines() {
            let line = line.map_err(open_err)?;
            kept.lines += 1;
            match serde_json::from_str::<Track>(&line) {
                Ok(track) => kept.finished.push_back(track),
                Err(e) => {
                    tracing::warn!(event = "history_line_skipped", path = %path.display(), error = %e, "an incomplete line of the event history was skipped")
                }
            }
            if kept.finished.len() > max {
                kept.finished.pop_front();
            }
        }
        let history = Self { path, max: max.max(1), kept: Mutex::new(kept) };
        if torn {
            history.rewrite().map_err(|source| HistoryError::Open { path: history.path.clone(), source })?;
        }
        Ok(history)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A poisoned lock only means a reader panicked: the tracks are whole.
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one object event in; a finished track is written to the file before this returns.
    pub fn take(&self, event: &TrackEvent) -> std::io::Result<()> {
        let key = (event.camera.clone(), event.track_id.clone());
        let finished = {
            let mut kept = self.lock();
            match event.kind {
                EventType::New => {
                    // An end the queue had no room for would leave its track open for ever.
                    if kept.open.len() >= MAX_OPEN {
                        let oldest = kept.open.iter().min_by_key(|(_, t)| t.start_ts).map(|(k, _)| k.clone());
                        oldest.map(|k| kept.open.remove(&k));
                    }
                    kept.open.insert(key, Track::began(event));
                    return Ok(());
                }
                EventType::Update => {
                    if let Some(track) = kept.open.get_mut(&key) {
                        track.saw(event);
                    }
                    return Ok(());
                }
                EventType::End => {
                    let mut track = kept.open.remove(&key).unwrap_or_else(|| Track::began(event));
                    track.saw(event);
                    track.end_ts = event.end_ts;
                    kept.finished.push_back(track.clone());
                    if kept.finished.len() > self.max {
                        kept.finished.pop_front();
                    }
                    kept.lines += 1;
                    track
                }
            }
        };
        self.append(&finished)?;
        if self.lock().lines >= 2 * self.max {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Appends one line; a failed write (a full disk) is cut back off, so that the next line
    /// starts on a line of its own.
    fn append(&self, track: &Track) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(track).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        let length = file.metadata()?.len();
        let written = file.write_all(&line).and_then(|()| file.sync_data());
        if written.is_err() {
            let _ = file.set_len(length);
        }
        written
    }

    /// Rewrites the file with only the tracks kept, through a new file renamed over it.
    fn rewrite(&self) -> std::io::Result<()> {
        let tracks: Vec<Track> = self.lock().finished.iter().cloned().collect();
        let fresh = self.path.with_extension("jsonl.new");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&fresh)?);
        for track in &tracks {
            serde_json::to_writer(&mut file, track).map_err(std::io::Error::other)?;
            file.write_all(b"\n")?;
        }
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&fresh, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.lock().lines = tracks.len();
        Ok(())
    }

    /// The newest tracks `query` admits, newest start first, open ones included. Only the
    /// page is copied.
    pub fn newest(&self, query: &EventQuery) -> Vec<Track> {
        let kept = self.lock();
        let mut tracks: Vec<&Track> = kept.open.values().chain(kept.finished.iter()).filter(|t| query.admits(t)).collect();
        let page = query.limit.min(tracks.len());
        if page < tracks.len() {
            tracks.select_nth_unstable_by(page, |a, b| b.order().cmp(&a.order()));
            tracks.truncate(page);
        }
        tracks.sort_unstable_by(|a, b| b.order().cmp(&a.order()));
        tracks.into_iter().cloned().collect()
    }
}

/// Tracks in view at once, over every camera; beyond, the oldest is forgotten.
const MAX_OPEN: usize = 1000;

/// How many object events wait for the history's writer; beyond, they are dropped and counted.
pub const QUEUED: usize = 1024;

/// Starts the thread that takes object events into `history` until every sender is gone.
pub fn spawn_writer(history: Arc<History>) -> std::io::Result<(std::sync::mpsc::SyncSender<TrackEvent>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<TrackEvent>(QUEUED);
    let thread = std::thread::Builder::new().name("history".into()).spawn(move || {
        for event in rx {
            if let Err(e) = history.take(&event) {
                tracing::error!(event = "history_write_failed", error = %e, "cannot write the event history; the track is kept in memory only");
            }
        }
    })?;
    Ok((tx, thread))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventType, track: &str, ts: i64, record: Option<&str>) -> TrackEvent {
        TrackEvent {
            kind,
            camera: "gate".into(),
            track_id: track.into(),
            label: "person".into(),
            score: 0.8,
            top_score: if kind == EventType::Update { 0.95 } else { 0.8 },
            bbox: [1, 2, 3, 4],
            frame_w: 640,
            frame_h: 480,
            start_ts: ts,
            end_ts: (kind == EventType::End).then_some(ts + 5000),
            record_id: record.map(str::to_owned),
            crop: record.map(|r| format!("{r}.jpg")),
        }
    }

    fn all() -> EventQuery {
        EventQuery { limit: 100, ..EventQuery::default() }
    }

    #[test]
    fn a_track_is_one_entry_from_its_start_to_its_end_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = History::open(dir.path(), 10).expect("open");
        history.take(&event(EventType::New, "1", 1000, None)).expect("new");
        history.take(&event(EventType::Update, "1", 1000, Some("d:gate:1500:0"))).expect("update");
        assert_eq!(history.newest(&all())[0].end_ts, None, "open while seen");
        history.take(&event(EventType::End, "1", 1000, None)).expect("end");
        history.take(&event(EventType::New, "2", 2000, None)).expect("a second, still open");
        let tracks = history.newest(&all());
        assert_eq!(tracks.iter().map(|t| t.track_id.as_str()).collect::<Vec<_>>(), ["2", "1"], "newest first");
        assert_eq!((tracks[1].top_score, tracks[1].end_ts, tracks[1].record_id.as_deref()), (0.95, Some(6000), Some("d:gate:1500:0")));

        drop(history);
        let reopened = History::open(dir.path(), 10).expect("reopen");
        assert_eq!(reopened.newest(&all()), [tracks[1].clone()], "finished tracks are kept; the open one was not finished");
    }

    #[test]
    fn the_history_keeps_the_newest_tracks_and_skips_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = History::open(dir.path(), 3).expect("open");
        for i in 0..10 {
            history.take(&event(EventType::End, &i.to_string(), i * 1000, None)).expect("end");
        }
        let newest: Vec<String> = history.newest(&all()).into_iter().map(|t| t.track_id).collect();
        assert_eq!(newest, ["9", "8", "7"]);
        let lines = std::fs::read_to_string(dir.path().join("events/history.jsonl")).expect("file").lines().count();
        assert!(lines < 6, "the file is rewritten once it holds twice the bound: {lines} lines");
        drop(history);
        let mut file = std::fs::OpenOptions::new().append(true).open(dir.path().join("events/history.jsonl")).expect("file");
        file.write_all(b"{\"camera\":\"gate\",\"tra").expect("a torn line");
        let reopened = History::open(dir.path(), 3).expect("a torn line is no reason not to start");
        assert_eq!(reopened.newest(&all()).len(), 3);
        let newest = reopened.newest(&EventQuery { limit: 1, ..EventQuery::default() });
        let query = EventQuery { after: Some(newest[0].cursor()), limit: 1, ..EventQuery::default() };
        assert_eq!(reopened.newest(&query)[0].track_id, "8", "the next page starts after the last shown");
    }

    #[test]
    fn pages_end_between_tracks_of_one_frame_and_miss_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = History::open(dir.path(), 100).expect("open");
        for track in ["a", "b", "c", "d", "e"] {
            history.take(&event(EventType::New, track, 1000, None)).expect("one frame's objects");
        }
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = history.newest(&EventQuery { after: after.clone(), limit: 2, ..EventQuery::default() });
            let Some(last) = page.last() else { break };
            after = Some(last.cursor());
            seen.extend(page.iter().map(|t| t.track_id.clone()));
        }
        assert_eq!(seen, ["e", "d", "c", "b", "a"]);
        let cursor = Cursor::parse("1000:gate:80.0").expect("a cursor");
        assert_eq!((cursor.to_string(), Cursor::parse("soon")), ("1000:gate:80.0".to_owned(), None));
    }
}

//! The IoU tracker: follows each detected object from frame to frame so that it is embedded when
//! it first appears, and again only when it looks different or `reembed_s` has passed.

use super::AnalysisConfig;
use crate::embed::PixelBox;

/// Side of the colour thumbnail that stands in for an object's appearance between embeddings.
const SIGNATURE_SIDE: u32 = 8;

struct Track {
    id: String,
    label: &'static str,
    bbox: PixelBox,
    last_seen_ms: i64,
    /// Appearance in the latest frame, kept as the reference once its embedding succeeded.
    seen_signature: Vec<f32>,
    /// Appearance and stream time at the last successful embedding; `None` until one succeeded,
    /// so an object whose embedding failed is tried again on its next frame.
    embedded: Option<(Vec<f32>, i64)>,
}

/// What to do with one detection.
#[derive(Debug, PartialEq)]
pub struct Assignment {
    pub track_id: String,
    pub embed: bool,
}

pub struct Tracker {
    tracks: Vec<Track>,
    dedupe: bool,
    iou_threshold: f32,
    timeout_ms: i64,
    reembed_ms: i64,
    reembed_distance: f32,
}

impl Tracker {
    pub fn new(config: &AnalysisConfig) -> Self {
        Self {
            tracks: Vec::new(),
            dedupe: config.dedupe,
            iou_threshold: config.iou_threshold,
            timeout_ms: (config.track_timeout_s * 1000.0) as i64,
            reembed_ms: (config.reembed_s * 1000.0) as i64,
            reembed_distance: config.reembed_distance,
        }
    }

    /// Matches the detections of the frame at stream time `now_ms` (label, box) to tracks,
    /// greedily by IoU within a label, and decides which to embed. The tracker takes a decision
    /// to embed as done only when [`Tracker::embedded`] confirms it. New track ids are
    /// `{key_ms}.{index}` (`key_ms` is the frame's id key): unique per camera, the same on a
    /// rerun of a file.
    pub fn assign(
        &mut self,
        frame: &image::RgbImage,
        detections: &[(&'static str, PixelBox)],
        now_ms: i64,
        key_ms: u64,
    ) -> Vec<Assignment> {
        self.expire(now_ms);
        let mut pairs = Vec::new();
        for (d, (label, b)) in detections.iter().enumerate() {
            for (t, track) in self.tracks.iter().enumerate() {
                let overlap = iou(b, &track.bbox);
                if track.label == *label && overlap >= self.iou_threshold {
                    pairs.push((overlap, d, t));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_of = vec![None; detections.len()];
        let mut taken = vec![false; self.tracks.len()];
        for (_, d, t) in pairs {
            if track_of[d].is_none() && !taken[t] {
                track_of[d] = Some(t);
                taken[t] = true;
            }
        }
        let mut assignments = Vec::with_capacity(detections.len());
        for (d, (label, b)) in detections.iter().enumerate() {
            let signature = appearance(frame, b);
            let assignment = match track_of[d] {
                Some(t) => {
                    let track = &mut self.tracks[t];
                    track.bbox = *b;
                    track.last_seen_ms = now_ms;
                    let embed = match &track.embedded {
                        None => true,
                        Some((embedded_signature, embedded_ms)) => {
                            let changed = cosine_distance(&signature, embedded_signature) > self.reembed_distance;
                            !self.dedupe || changed || now_ms - embedded_ms >= self.reembed_ms
                        }
                    };
                    track.seen_signature = signature;
                    Assignment { track_id: track.id.clone(), embed }
                }
                None => {
                    let id = format!("{key_ms}.{d}");
                    let track = Track { id: id.clone(), label, bbox: *b, last_seen_ms: now_ms, seen_signature: signature, embedded: None };
                    self.tracks.push(track);
                    Assignment { track_id: id, embed: true }
                }
            };
            assignments.push(assignment);
        }
        assignments
    }
}

impl Tracker {
    /// Ends the tracks not seen for `track_timeout_s` at stream time `now_ms`. [`Tracker::assign`]
    /// does it too; calling it on frames the motion gate kept from the detector ends tracks on
    /// time in a still scene.
    pub fn expire(&mut self, now_ms: i64) {
        self.tracks.retain(|t| now_ms - t.last_seen_ms <= self.timeout_ms);
    }

    /// Whether track `id` is still followed.
    pub fn follows(&self, id: &str) -> bool {
        self.tracks.iter().any(|t| t.id == id)
    }

    /// The embedding asked for by [`Tracker::assign`] succeeded: the track's current look, at
    /// stream time `now_ms`, is what later frames are compared with.
    pub fn embedded(&mut self, track_id: &str, now_ms: i64) {
        if let Some(track) = self.tracks.iter_mut().find(|t| t.id == track_id) {
            track.embedded = Some((track.seen_signature.clone(), now_ms));
        }
    }
}

pub fn iou(a: &PixelBox, b: &PixelBox) -> f32 {
    let x0 = a.x.max(b.x);
    let y0 = a.y.max(b.y);
    let x1 = (a.x + a.w).min(b.x + b.w);
    let y1 = (a.y + a.h).min(b.y + b.h);
    let inter = x1.saturating_sub(x0) as f32 * y1.saturating_sub(y0) as f32;
    let union = (a.w * a.h + b.w * b.h) as f32 - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// An 8x8 colour thumbnail of the box, mean-removed: its cosine distance to another is a cheap
/// "does this look different" that ignores overall brightness.
fn appearance(frame: &image::RgbImage, b: &PixelBox) -> Vec<f32> {
    let mut v = Vec::with_capacity((SIGNATURE_SIDE * SIGNATURE_SIDE * 3) as usize);
    for gy in 0..SIGNATURE_SIDE {
        for gx in 0..SIGNATURE_SIDE {
            let x = (b.x + (2 * gx + 1) * b.w / (2 * SIGNATURE_SIDE)).min(frame.width().saturating_sub(1));
            let y = (b.y + (2 * gy + 1) * b.h / (2 * SIGNATURE_SIDE)).min(frame.height().saturating_sub(1));
            let p = frame.get_pixel(x, y);
            v.extend(p.0.iter().map(|c| *c as f32));
        }
    }
    let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
    v.iter_mut().for_each(|c| *c -= mean);
    v
}

fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norms = a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norms == 0.0 {
        0.0
    } else {
        1.0 - dot / norms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AnalysisConfig {
        AnalysisConfig { reembed_s: 60.0, track_timeout_s: 5.0, ..AnalysisConfig::default() }
    }

    fn frame() -> image::RgbImage {
        image::RgbImage::from_fn(640, 360, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]))
    }

    fn at(x: u32) -> PixelBox {
        PixelBox { x, y: 100, w: 80, h: 120 }
    }

    /// One frame at `ms` whose embeddings all succeed, as the analyzer reports them.
    fn step(tracker: &mut Tracker, frame: &image::RgbImage, detections: &[(&'static str, PixelBox)], ms: i64) -> Vec<Assignment> {
        let assignments = tracker.assign(frame, detections, ms, ms as u64);
        for a in assignments.iter().filter(|a| a.embed) {
            tracker.embedded(&a.track_id, ms);
        }
        assignments
    }

    #[test]
    fn a_parked_car_is_embedded_once_until_reembed_s_passes() {
        let mut tracker = Tracker::new(&config());
        let embeds: Vec<bool> = (0..70).map(|s| step(&mut tracker, &frame(), &[("car", at(200))], s * 1000)[0].embed).collect();
        assert!(embeds[0]);
        assert_eq!(embeds.iter().filter(|e| **e).count(), 2, "at 0 s and again at 60 s");
        assert!(embeds[60]);
    }

    #[test]
    fn a_moving_object_keeps_its_track_id() {
        let mut tracker = Tracker::new(&config());
        let ids: Vec<String> =
            (0..5).map(|s| step(&mut tracker, &frame(), &[("person", at(100 + s as u32 * 10))], s * 1000)[0].track_id.clone()).collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    }

    #[test]
    fn a_new_object_or_another_label_starts_a_new_track() {
        let mut tracker = Tracker::new(&config());
        let first = step(&mut tracker, &frame(), &[("car", at(0))], 0);
        let next = step(&mut tracker, &frame(), &[("car", at(0)), ("person", at(0)), ("car", at(400))], 1000);
        assert_eq!(next[0], Assignment { track_id: first[0].track_id.clone(), embed: false });
        assert!(next[1].embed && next[2].embed);
        assert_ne!(next[1].track_id, next[2].track_id);
    }

    #[test]
    fn a_change_of_appearance_is_embedded_again() {
        let mut tracker = Tracker::new(&config());
        step(&mut tracker, &frame(), &[("person", at(200))], 0);
        let mut changed = frame();
        for y in 100..220 {
            for x in 200..280 {
                changed.put_pixel(x, y, image::Rgb([(x * 7 % 256) as u8, 255 - (y % 256) as u8, 0]));
            }
        }
        assert!(step(&mut tracker, &changed, &[("person", at(200))], 1000)[0].embed);
    }

    #[test]
    fn a_track_unseen_for_longer_than_the_timeout_is_forgotten() {
        let mut tracker = Tracker::new(&config());
        let first = step(&mut tracker, &frame(), &[("car", at(0))], 0);
        let later = step(&mut tracker, &frame(), &[("car", at(0))], 10_000);
        assert_ne!(first[0].track_id, later[0].track_id);
        assert!(later[0].embed);
    }

    #[test]
    fn without_dedupe_every_detection_is_embedded() {
        let mut tracker = Tracker::new(&AnalysisConfig { dedupe: false, ..config() });
        assert!((0..5).all(|s| step(&mut tracker, &frame(), &[("car", at(0))], s * 1000)[0].embed));
    }

    #[test]
    fn an_object_whose_embedding_failed_is_embedded_on_its_next_frame() {
        let mut tracker = Tracker::new(&config());
        let first = tracker.assign(&frame(), &[("car", at(200))], 0, 0);
        assert!(first[0].embed);
        // The embedding failed: nothing confirms it, so the object is not yet deduplicated.
        let next = tracker.assign(&frame(), &[("car", at(200))], 1000, 1000);
        assert_eq!(next[0], Assignment { track_id: first[0].track_id.clone(), embed: true });
        tracker.embedded(&next[0].track_id, 1000);
        assert!(!tracker.assign(&frame(), &[("car", at(200))], 2000, 2000)[0].embed);
    }
}

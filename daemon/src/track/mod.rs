//! Per-camera attention: what is worth the models' time. The motion gate (`motion.rs`) decides
//! whether a frame goes to DETR at all; the IoU tracker (`tracker.rs`) decides which detections
//! go to CLIP, so a parked car is embedded once rather than once per frame.
//!
//! Pure computation on the inference thread, one [`Attention`] per camera; it sees frames and
//! detections, never models, the outbox or the network. Decisions depend only on the frames and
//! their stream times, so two runs over the same file give the same records.

pub mod motion;
pub mod tracker;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::validate::{KeyPath, Problem};

/// A rectangle of the frame in fractions of its width and height: `[left, top, right, bottom]`.
pub type MaskRect = [f64; 4];

/// `[analysis]`: motion gating and de-duplication. Absent: both on, with these defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct AnalysisConfig {
    /// Run DETR only on frames where something moved (and every `refresh_s`). Default true.
    pub motion_gate: bool,
    /// Luma difference (0-255) from the background that counts a cell as changed. Default 25.
    pub motion_threshold: u8,
    /// Share of the frame (outside the camera's motion masks) that must change to count as
    /// motion. Default 0.005 (0.5 %).
    pub motion_min_area: f64,
    /// Per camera name, rectangles where change is not motion (a clock overlay, trees in the
    /// wind, a road outside the property): `front = [[0.0, 0.0, 1.0, 0.08]]`, fractions of the
    /// frame. DETR still sees the whole frame when something moves elsewhere. Default none.
    pub motion_masks: BTreeMap<String, Vec<MaskRect>>,
    /// Run DETR at least this often even on a still scene, seconds. Default 30.
    pub refresh_s: f64,
    /// Embed each tracked object once, and again only when it looks different or after
    /// `reembed_s`; false: embed (and index) every detection of every frame. Default true.
    pub dedupe: bool,
    /// Overlap (intersection over union) for a detection to continue a track. Default 0.3.
    pub iou_threshold: f32,
    /// A track not seen for this long ends, seconds. Default 5.
    pub track_timeout_s: f64,
    /// Embed a tracked object again after this long, seconds. Default 300.
    pub reembed_s: f64,
    /// Embed again when the object's appearance (colour thumbnail) moved this far in cosine
    /// distance since its last embedding. Default 0.15.
    pub reembed_distance: f32,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            motion_gate: true,
            motion_threshold: 25,
            motion_min_area: 0.005,
            motion_masks: BTreeMap::new(),
            refresh_s: 30.0,
            dedupe: true,
            iou_threshold: 0.3,
            track_timeout_s: 5.0,
            reembed_s: 300.0,
            reembed_distance: 0.15,
        }
    }
}

impl AnalysisConfig {
    pub fn validate(&self, at: &KeyPath, problems: &mut Vec<Problem>) {
        if !(self.motion_min_area > 0.0 && self.motion_min_area <= 1.0) {
            problems.push(Problem::new(at.key("motion_min_area"), "must be a share of the frame above 0 and at most 1, e.g. 0.005"));
        }
        if !(0.0..=1.0).contains(&self.iou_threshold) || self.iou_threshold == 0.0 {
            problems.push(Problem::new(at.key("iou_threshold"), "must be above 0 and at most 1, e.g. 0.3"));
        }
        if !(0.0..=2.0).contains(&self.reembed_distance) {
            problems.push(Problem::new(at.key("reembed_distance"), "must be a cosine distance between 0 and 2, e.g. 0.15"));
        }
        for (camera, rects) in &self.motion_masks {
            for (i, [left, top, right, bottom]) in rects.iter().enumerate() {
                let inside = [left, top, right, bottom].iter().all(|v| (0.0..=1.0).contains(*v));
                if !inside || left >= right || top >= bottom {
                    problems.push(Problem::new(
                        at.key("motion_masks").key(camera).index(i),
                        "must be [left, top, right, bottom] in fractions of the frame (0 to 1), left < right and top < bottom, e.g. [0.0, 0.0, 1.0, 0.08]",
                    ));
                }
            }
        }
        for (key, value) in [("refresh_s", self.refresh_s), ("track_timeout_s", self.track_timeout_s), ("reembed_s", self.reembed_s)] {
            if !(value.is_finite() && value > 0.0) {
                problems.push(Problem::new(at.key(key), "must be a positive number of seconds"));
            }
        }
    }
}

/// One camera's gate and tracker.
pub struct Attention {
    pub gate: motion::MotionGate,
    pub tracker: tracker::Tracker,
}

impl Attention {
    pub fn new(config: &AnalysisConfig, camera: &str) -> Self {
        let masks = config.motion_masks.get(camera).map_or(&[][..], Vec::as_slice);
        Self { gate: motion::MotionGate::new(config, masks), tracker: tracker::Tracker::new(config) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &AnalysisConfig) -> Vec<String> {
        let mut found = Vec::new();
        config.validate(&KeyPath::root().key("analysis"), &mut found);
        found.iter().map(|p| p.path.to_string()).collect()
    }

    #[test]
    fn the_defaults_are_valid_and_each_bad_value_is_named() {
        assert!(problems(&AnalysisConfig::default()).is_empty());
        let bad = AnalysisConfig {
            motion_min_area: 0.0,
            iou_threshold: 1.5,
            reembed_distance: -1.0,
            refresh_s: 0.0,
            ..AnalysisConfig::default()
        };
        assert_eq!(
            problems(&bad),
            ["analysis.motion_min_area", "analysis.iou_threshold", "analysis.reembed_distance", "analysis.refresh_s"]
        );
    }

    #[test]
    fn a_motion_mask_outside_the_frame_or_inside_out_is_named() {
        let masks = BTreeMap::from([("front".to_owned(), vec![[0.0, 0.0, 1.0, 0.1], [0.5, 0.2, 0.4, 0.3], [0.0, 0.0, 1.5, 1.0]])]);
        let config = AnalysisConfig { motion_masks: masks, ..AnalysisConfig::default() };
        assert_eq!(problems(&config), ["analysis.motion_masks.front[1]", "analysis.motion_masks.front[2]"]);
    }
}

//! The motion gate: a cheap per-camera test of whether a frame differs from the scene's running
//! background, so DETR runs only when something moved (plus a refresh now and then).

use super::{AnalysisConfig, MaskRect};

/// Width of the grayscale thumbnail the gate compares (height follows the aspect ratio): small
/// enough to cost well under a millisecond, large enough for a person at 20 m on 1080p.
const THUMB_WIDTH: u32 = 160;
/// How fast the background follows the scene: lighting drifts in, parked cars settle in within
/// about 1 / rate frames.
const LEARNING_RATE: f32 = 0.05;

/// Why the gate let a frame through, or that it did not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No background yet (first frame, or the resolution changed).
    First,
    Motion,
    /// Nothing moved, but `refresh_s` passed since the detector last ran.
    Refresh,
    /// Nothing moved: skip detection.
    Still,
}

impl Verdict {
    pub fn detect(self) -> bool {
        self != Verdict::Still
    }
}

pub struct MotionGate {
    enabled: bool,
    threshold: f32,
    min_area: f64,
    refresh_ms: i64,
    masks: Vec<MaskRect>,
    background: Vec<f32>,
    /// Per thumbnail cell: false where a mask covers the cell's centre; and how many are true.
    watched: Vec<bool>,
    watched_count: usize,
    size: (u32, u32),
    last_detect_ms: Option<i64>,
}

impl MotionGate {
    pub fn new(config: &AnalysisConfig, masks: &[MaskRect]) -> Self {
        Self {
            enabled: config.motion_gate,
            threshold: config.motion_threshold as f32,
            min_area: config.motion_min_area,
            refresh_ms: (config.refresh_s * 1000.0) as i64,
            masks: masks.to_vec(),
            background: Vec::new(),
            watched: Vec::new(),
            watched_count: 0,
            size: (0, 0),
            last_detect_ms: None,
        }
    }

    /// Looks at the frame taken at `now_ms` (stream position for files, so reruns decide alike)
    /// and learns it into the background.
    pub fn check(&mut self, frame: &image::RgbImage, now_ms: i64) -> Verdict {
        if !self.enabled {
            return Verdict::Motion;
        }
        let (thumb, size) = gray_thumbnail(frame);
        let verdict = if size != self.size || self.background.len() != thumb.len() {
            self.background = thumb.clone();
            self.watched = watched_cells(size, &self.masks);
            self.watched_count = self.watched.iter().filter(|w| **w).count();
            self.size = size;
            Verdict::First
        } else {
            let changed = (thumb.iter().zip(&self.background).zip(&self.watched))
                .filter(|((t, b), watched)| **watched && (*t - *b).abs() > self.threshold)
                .count();
            if changed > 0 && changed as f64 >= self.min_area * self.watched_count as f64 {
                Verdict::Motion
            } else if self.last_detect_ms.is_none_or(|last| now_ms - last >= self.refresh_ms) {
                Verdict::Refresh
            } else {
                Verdict::Still
            }
        };
        for (b, t) in self.background.iter_mut().zip(&thumb) {
            *b += LEARNING_RATE * (t - *b);
        }
        if verdict.detect() {
            self.last_detect_ms = Some(now_ms);
        }
        verdict
    }
}

/// Which cells of a `size` thumbnail the gate watches: those whose centre no mask covers.
fn watched_cells((tw, th): (u32, u32), masks: &[MaskRect]) -> Vec<bool> {
    let mut watched = Vec::with_capacity((tw * th) as usize);
    for cy in 0..th {
        for cx in 0..tw {
            let (x, y) = ((cx as f64 + 0.5) / tw as f64, (cy as f64 + 0.5) / th as f64);
            watched.push(!masks.iter().any(|[left, top, right, bottom]| (*left..*right).contains(&x) && (*top..*bottom).contains(&y)));
        }
    }
    watched
}

/// Mean luma of THUMB_WIDTH-wide cells (box filter), 0..255.
fn gray_thumbnail(frame: &image::RgbImage) -> (Vec<f32>, (u32, u32)) {
    let (w, h) = frame.dimensions();
    let tw = THUMB_WIDTH.min(w.max(1));
    let th = ((h as u64 * tw as u64) / w.max(1) as u64).max(1) as u32;
    let mut sums = vec![0f32; (tw * th) as usize];
    let mut counts = vec![0u32; (tw * th) as usize];
    let raw = frame.as_raw();
    // Every second row and column: plenty for a box mean, half the memory traffic of a full pass.
    for y in (0..h).step_by(2) {
        let cy = (y as u64 * th as u64 / h as u64) as u32;
        let row = &raw[(y * w * 3) as usize..((y + 1) * w * 3) as usize];
        for x in (0..w).step_by(2) {
            let cx = (x as u64 * tw as u64 / w as u64) as u32;
            let p = &row[(x * 3) as usize..(x * 3 + 3) as usize];
            let luma = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
            let cell = (cy * tw + cx) as usize;
            sums[cell] += luma;
            counts[cell] += 1;
        }
    }
    let thumb = sums.iter().zip(&counts).map(|(s, c)| if *c == 0 { 0.0 } else { s / *c as f32 }).collect();
    (thumb, (tw, th))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AnalysisConfig {
        AnalysisConfig { refresh_s: 10.0, ..AnalysisConfig::default() }
    }

    fn scene(square_at: Option<(u32, u32)>) -> image::RgbImage {
        let mut frame = image::RgbImage::from_pixel(640, 360, image::Rgb([90, 100, 110]));
        if let Some((x0, y0)) = square_at {
            for y in y0..y0 + 60 {
                for x in x0..x0 + 60 {
                    frame.put_pixel(x, y, image::Rgb([240, 230, 20]));
                }
            }
        }
        frame
    }

    #[test]
    fn a_still_scene_is_detected_once_then_only_at_each_refresh() {
        let mut gate = MotionGate::new(&config(), &[]);
        let verdicts: Vec<_> = (0..25).map(|s| gate.check(&scene(None), s * 1000)).collect();
        assert_eq!(verdicts[0], Verdict::First);
        assert_eq!(verdicts.iter().filter(|v| v.detect()).count(), 3, "first frame, then refreshes at 10 s and 20 s: {verdicts:?}");
        assert_eq!(verdicts[10], Verdict::Refresh);
    }

    #[test]
    fn something_moving_in_is_motion() {
        let mut gate = MotionGate::new(&config(), &[]);
        gate.check(&scene(None), 0);
        gate.check(&scene(None), 1000);
        assert_eq!(gate.check(&scene(Some((100, 100))), 2000), Verdict::Motion);
        assert_eq!(gate.check(&scene(Some((300, 200))), 3000), Verdict::Motion, "it moved on");
    }

    #[test]
    fn a_parked_object_becomes_background() {
        let mut gate = MotionGate::new(&config(), &[]);
        gate.check(&scene(None), 0);
        let still_after: Vec<_> = (1..=120).map(|s| gate.check(&scene(Some((100, 100))), s * 100)).collect();
        assert_eq!(still_after[0], Verdict::Motion);
        assert_eq!(*still_after.last().expect("frames"), Verdict::Still, "learned into the background");
    }

    #[test]
    fn a_disabled_gate_lets_every_frame_through() {
        let mut gate = MotionGate::new(&AnalysisConfig { motion_gate: false, ..config() }, &[]);
        assert!((0..5).all(|s| gate.check(&scene(None), s * 1000).detect()));
    }

    #[test]
    fn change_inside_a_motion_mask_is_not_motion_but_change_outside_it_is() {
        // The square at (100, 100)-(160, 160) of the 640x360 scene lies inside this mask.
        let mut gate = MotionGate::new(&config(), &[[0.1, 0.2, 0.3, 0.5]]);
        gate.check(&scene(None), 0);
        gate.check(&scene(None), 1000);
        assert_eq!(gate.check(&scene(Some((100, 100))), 2000), Verdict::Still, "masked");
        assert_eq!(gate.check(&scene(Some((400, 200))), 3000), Verdict::Motion, "outside the mask");
    }

    #[test]
    fn a_camera_masked_everywhere_is_detected_only_at_refreshes() {
        let mut gate = MotionGate::new(&config(), &[[0.0, 0.0, 1.0, 1.0]]);
        let verdicts: Vec<_> = (0..12).map(|s| gate.check(&scene(Some((20 * s as u32, 100))), s * 1000)).collect();
        assert_eq!(verdicts.iter().filter(|v| v.detect()).count(), 2, "first frame and the refresh at 10 s: {verdicts:?}");
    }
}

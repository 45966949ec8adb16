//! Test clips made with GStreamer's own encoder, for properties a real clip cannot promise
//! (an exact keyframe interval, an exact length).

use std::path::Path;
use std::process::Command;

/// Writes an H.264 MP4 of `seconds` at `fps`, with a keyframe every `gop` frames (a moving ball).
pub fn h264_clip(path: &Path, seconds: u32, fps: u32, gop: u32, width: u32, height: u32) {
    h264_pattern_clip(path, "ball", seconds, fps, gop, width, height)
}

/// The same with another videotestsrc `pattern` ("smpte100": a still scene; "smpte" is not, its
/// corner is snow).
pub fn h264_pattern_clip(path: &Path, pattern: &str, seconds: u32, fps: u32, gop: u32, width: u32, height: u32) {
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(
            format!(
                "videotestsrc num-buffers={} pattern={pattern} ! video/x-raw,width={width},height={height},framerate={fps}/1 ! \
             x264enc key-int-max={gop} speed-preset=ultrafast tune=zerolatency ! h264parse ! mp4mux ! filesink",
                seconds * fps
            )
            .split_whitespace(),
        )
        .arg(format!("location={}", path.display()))
        .status()
        .expect("gst-launch-1.0 runs (gstreamer1.0-tools)");
    assert!(status.success(), "encoding the test clip failed");
}

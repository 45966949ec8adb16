//! Building one camera's GStreamer pipeline and copying frames out of it.
//!
//! ```text
//! uridecodebin ─(decoder chosen by decoder.rs; DELTA_UNIT buffers dropped before it in
//!               keyframe mode; nvvidconv inserted after NVMM decoders)─▶ videorate drop-only
//!   ─▶ video/x-raw,framerate=sample_fps ─▶ videoconvert ─▶ RGB ─▶ appsink (max 1 buffer)
//! ```
//! `test:` starts with videotestsrc and `csi://N` with nvarguscamerasrc or libcamerasrc instead.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::decoder::{self, Codec};
use super::{CameraConfig, KeyframeMode, Transport};

/// What the pipeline reports back while it runs, shared with its callbacks.
#[derive(Default)]
pub struct Probes {
    /// Decoded frames entering `videorate`.
    pub decoded: AtomicU64,
    /// Compressed buffers entering the decoder (or decoded frames, for raw sources): liveness.
    pub buffers_in: AtomicU64,
    /// Delta units dropped before the decoder in keyframe mode.
    pub deltas_skipped: AtomicU64,
    /// The decoder element decodebin ended up using.
    pub decoder: Mutex<Option<String>>,
    /// Set when the chosen decoder is a hardware one (so a failure can fall back to software).
    pub hardware_decoder: AtomicBool,
}

pub struct Pipeline {
    pub pipeline: gst::Pipeline,
    pub sink: gst_app::AppSink,
}

/// Builds the camera's pipeline. `hardware_failed`: a hardware decoder failed before, so `auto`
/// uses software this time.
pub fn build(camera: &CameraConfig, probes: Arc<Probes>, hardware_failed: bool) -> anyhow::Result<Pipeline> {
    let fps = fps_fraction(camera.sample_fps);
    let drop = if camera.is_live() { "true" } else { "false" };
    // A looping file stands in for a camera: play it in real time rather than as fast as possible.
    let sync = if camera.r#loop { "true" } else { "false" };
    let tail = format!(
        "videorate name=rate drop-only=true ! video/x-raw,framerate={}/{} ! videoconvert ! video/x-raw,format=RGB ! \
         appsink name=sink max-buffers=1 drop={drop} sync={sync}",
        fps.numer(),
        fps.denom()
    );
    let description = match raw_source_head(camera)? {
        Some(head) => format!("{head} ! {tail}"),
        None => tail,
    };
    let pipeline = gst::parse::launch(&description)
        .context("building the pipeline")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("the pipeline description did not produce a pipeline"))?;
    let rate = pipeline.by_name("rate").context("videorate element missing")?;
    let rate_sink = rate.static_pad("sink").context("videorate has no sink pad")?;
    let counters = probes.clone();
    rate_sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        counters.decoded.fetch_add(1, Ordering::Relaxed);
        counters.buffers_in.fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    if raw_source_head(camera)?.is_none() {
        add_uridecodebin(&pipeline, camera, &rate_sink, probes, hardware_failed)?;
    }
    let sink = pipeline
        .by_name("sink")
        .context("appsink missing")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| anyhow::anyhow!("element 'sink' is not an appsink"))?;
    Ok(Pipeline { pipeline, sink })
}

/// The head of pipelines whose source produces raw video itself; `None` for uridecodebin.
fn raw_source_head(camera: &CameraConfig) -> anyhow::Result<Option<String>> {
    if camera.uri.starts_with("test:") {
        return Ok(Some("videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=15/1".into()));
    }
    let Some(index) = camera.uri.strip_prefix("csi://") else { return Ok(None) };
    let index: u32 = index.trim_end_matches('/').parse().with_context(|| format!("csi://N needs a camera number, got {:?}", camera.uri))?;
    if gst::ElementFactory::find("nvarguscamerasrc").is_some() {
        // Jetson: the ISP delivers NVMM buffers; nvvidconv copies them to system memory.
        Ok(Some(format!("nvarguscamerasrc sensor-id={index} ! video/x-raw(memory:NVMM) ! nvvidconv ! video/x-raw")))
    } else if gst::ElementFactory::find("libcamerasrc").is_some() {
        // Raspberry Pi: libcamera names cameras by path; the first one is the usual case.
        Ok(Some("libcamerasrc ! video/x-raw".into()))
    } else {
        anyhow::bail!("csi:// needs nvarguscamerasrc (Jetson, NVIDIA's GStreamer plugins) or libcamerasrc (Raspberry Pi, gstreamer1.0-libcamera); neither is installed")
    }
}

fn add_uridecodebin(pipeline: &gst::Pipeline, camera: &CameraConfig, target: &gst::Pad, probes: Arc<Probes>, hardware_failed: bool) -> anyhow::Result<()> {
    let src = gst::ElementFactory::make("uridecodebin")
        .name("src")
        .property("uri", camera.uri.as_str())
        .build()
        .context("creating uridecodebin (is gstreamer1.0-plugins-base installed?)")?;
    pipeline.add(&src).context("adding uridecodebin")?;

    let transport = camera.transport;
    src.connect("source-setup", false, move |values| {
        if let Some(source) = values.get(1).and_then(|v| v.get::<gst::Element>().ok()) {
            if source.find_property("protocols").is_some() {
                // rtspsrc: TCP survives NAT and lossy Wi-Fi; UDP only when asked for.
                let protocols = match transport {
                    Transport::Tcp => "tcp",
                    Transport::Udp => "udp+udp-mcast",
                };
                source.set_property_from_str("protocols", protocols);
            }
        }
        None
    });

    let mode = camera.decoder.clone();
    let select_result = glib::Type::from_name("GstAutoplugSelectResult").and_then(glib::EnumClass::with_type);
    src.connect("autoplug-select", false, move |values| {
        let (Some(caps), Some(factory), Some(results)) = (
            values.get(2).and_then(|v| v.get::<gst::Caps>().ok()),
            values.get(3).and_then(|v| v.get::<gst::ElementFactory>().ok()),
            select_result.as_ref(),
        ) else {
            return None;
        };
        const TRY: i32 = 0;
        const SKIP: i32 = 2;
        if !is_video_decoder(&factory) {
            return results.to_value(TRY);
        }
        let codec = caps.structure(0).map_or(Codec::Other, |s| Codec::from_caps_name(s.name()));
        let installed = |name: &str| gst::ElementFactory::find(name).is_some();
        let verdict = match decoder::choose(codec, &mode, &installed, hardware_failed) {
            Ok(Some(chosen)) if chosen != factory.name().as_str() => SKIP,
            _ => TRY,
        };
        results.to_value(verdict)
    });

    let keyframes = KeyframeGate::new(camera.keyframes, camera.sample_fps);
    let watched = probes.clone();
    pipeline.connect_deep_element_added(move |_, _, element| {
        let Some(factory) = element.factory() else { return };
        if !is_video_decoder(&factory) {
            return;
        }
        let name = factory.name().to_string();
        tracing::info!(decoder = %name, hardware = decoder::is_hardware(&name), "video decoder chosen");
        watched.hardware_decoder.store(decoder::is_hardware(&name), Ordering::Relaxed);
        if let Ok(mut d) = watched.decoder.lock() {
            *d = Some(name);
        }
        if let Some(pad) = element.static_pad("sink") {
            let gate = Mutex::new(keyframes.clone());
            let counters = watched.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                counters.buffers_in.fetch_add(1, Ordering::Relaxed);
                let Some(buffer) = info.buffer() else { return gst::PadProbeReturn::Ok };
                let key = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                let pass = gate.lock().map_or(true, |mut g| g.pass(key, buffer.pts().map(|t| t.nseconds())));
                if pass {
                    gst::PadProbeReturn::Ok
                } else {
                    counters.deltas_skipped.fetch_add(1, Ordering::Relaxed);
                    drop_buffer(info)
                }
            });
        }
    });

    let target = target.clone();
    let bin = pipeline.clone();
    src.connect_pad_added(move |_, pad| {
        let Some(caps) = pad.current_caps() else { return };
        let is_video = caps.structure(0).is_some_and(|s| s.name().starts_with("video/"));
        if !is_video || target.is_linked() {
            return;
        }
        let nvmm = caps.features(0).is_some_and(|f| f.contains("memory:NVMM"));
        let result = if nvmm { link_through_nvvidconv(&bin, pad, &target) } else { pad.link(&target).map(|_| ()).map_err(|e| format!("{e:?}")) };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not link the decoded video pad");
        }
    });
    Ok(())
}

/// Consumes the probed buffer so it never reaches the element. (Taking it and answering
/// `Handled` avoids GStreamer unreffing the buffer a second time, which `Drop` does here.)
pub fn drop_buffer(info: &mut gst::PadProbeInfo) -> gst::PadProbeReturn {
    drop(info.take_buffer());
    gst::PadProbeReturn::Handled
}

/// NVIDIA decoders output NVMM (device) memory; nvvidconv copies it to system memory.
fn link_through_nvvidconv(bin: &gst::Pipeline, pad: &gst::Pad, target: &gst::Pad) -> Result<(), String> {
    let convert = gst::ElementFactory::make("nvvidconv").build().map_err(|e| format!("nvvidconv missing: {e}"))?;
    bin.add(&convert).map_err(|e| e.to_string())?;
    convert.sync_state_with_parent().map_err(|e| e.to_string())?;
    let sink = convert.static_pad("sink").ok_or("nvvidconv has no sink pad")?;
    let src = convert.static_pad("src").ok_or("nvvidconv has no src pad")?;
    pad.link(&sink).map_err(|e| format!("{e:?}"))?;
    src.link(target).map_err(|e| format!("{e:?}"))?;
    Ok(())
}

fn is_video_decoder(factory: &gst::ElementFactory) -> bool {
    let klass = factory.metadata("klass").unwrap_or_default();
    klass.contains("Decoder") && klass.contains("Video")
}

/// Decides, buffer by buffer, whether compressed video goes to the decoder.
///
/// `always` drops every delta unit, so only keyframes are decoded. `auto` measures the
/// interval between keyframes and drops delta units once keyframes come at least as often as
/// frames are sampled (decoding the rest would be thrown away by sampling). `never` decodes all.
#[derive(Clone, Debug)]
pub struct KeyframeGate {
    mode: KeyframeMode,
    sample_interval_ns: u64,
    last_key_ns: Option<u64>,
    /// The longest of the recent keyframe intervals.
    key_interval_ns: Option<u64>,
}

impl KeyframeGate {
    pub fn new(mode: KeyframeMode, sample_fps: f64) -> Self {
        Self { mode, sample_interval_ns: (1e9 / sample_fps) as u64, last_key_ns: None, key_interval_ns: None }
    }

    pub fn pass(&mut self, keyframe: bool, pts_ns: Option<u64>) -> bool {
        if keyframe {
            if let (Some(last), Some(now)) = (self.last_key_ns, pts_ns) {
                let interval = now.saturating_sub(last);
                // Forget slowly: a longer GOP shows up at once, a shorter one only gradually.
                self.key_interval_ns = Some(match self.key_interval_ns {
                    Some(known) if interval < known => (known + interval) / 2,
                    _ => interval,
                });
            }
            if pts_ns.is_some() {
                self.last_key_ns = pts_ns;
            }
            return true;
        }
        match self.mode {
            KeyframeMode::Never => true,
            KeyframeMode::Always => false,
            KeyframeMode::Auto => !self.key_interval_ns.is_some_and(|k| k > 0 && k <= self.sample_interval_ns),
        }
    }
}

/// `sample_fps` as the fraction GStreamer caps want.
pub fn fps_fraction(fps: f64) -> gst::Fraction {
    let den = 1000;
    let num = (fps * den as f64).round().max(1.0) as i32;
    let g = gcd(num, den);
    gst::Fraction::new(num / g, den / g)
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Copies a sample's RGB pixels (dropping row padding) and its timestamp in milliseconds.
pub fn copy_frame(sample: &gst::Sample) -> anyhow::Result<(image::RgbImage, u64)> {
    let buffer = sample.buffer().context("sample without a buffer")?;
    let caps = sample.caps().context("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).context("unreadable video caps")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|_| anyhow::anyhow!("cannot map the video buffer"))?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).context("video frame without a plane")?;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        let start = row * stride;
        rgb.extend_from_slice(data.get(start..start + w * 3).context("video frame shorter than its caps")?);
    }
    let image = image::RgbImage::from_raw(w as u32, h as u32, rgb).context("frame size mismatch")?;
    let pts_ms = buffer.pts().map_or(0, |t| t.mseconds());
    Ok((image, pts_ms))
}

/// The text of an ERROR on the bus, naming the element, with GStreamer's debug detail (which
/// carries e.g. the RTSP status code).
pub fn bus_error(msg: &gst::message::Error) -> String {
    let element = msg.src().map(|s| s.name().to_string()).unwrap_or_else(|| "pipeline".into());
    match msg.debug() {
        Some(debug) => format!("{element}: {} ({})", msg.error(), debug.lines().last().unwrap_or_default()),
        None => format!("{element}: {}", msg.error()),
    }
}

/// The first ERROR on the bus, waiting up to half a second for it to be posted.
pub fn first_error(bus: &gst::Bus) -> Option<String> {
    bus.timed_pop_filtered(gst::ClockTime::from_mseconds(500), &[gst::MessageType::Error]).and_then(|msg| match msg.view() {
        gst::MessageView::Error(err) => Some(bus_error(&err)),
        _ => None,
    })
}

pub const PULL_TIMEOUT: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn sample_rates_become_reduced_fractions() {
        assert_eq!(fps_fraction(1.0), gst::Fraction::new(1, 1));
        assert_eq!(fps_fraction(0.5), gst::Fraction::new(1, 2));
        assert_eq!(fps_fraction(2.5), gst::Fraction::new(5, 2));
    }

    #[test]
    fn always_decodes_keyframes_only_and_never_decodes_everything() {
        let mut always = KeyframeGate::new(KeyframeMode::Always, 5.0);
        let mut never = KeyframeGate::new(KeyframeMode::Never, 5.0);
        assert!(always.pass(true, Some(0)) && !always.pass(false, Some(SECOND / 25)));
        assert!(never.pass(true, Some(0)) && never.pass(false, Some(SECOND / 25)));
    }

    #[test]
    fn auto_skips_delta_units_once_keyframes_come_as_often_as_samples() {
        // One keyframe a second, sampling at 1 fps: after the interval is known, skip deltas.
        let mut gate = KeyframeGate::new(KeyframeMode::Auto, 1.0);
        assert!(gate.pass(true, Some(0)));
        assert!(gate.pass(false, Some(SECOND / 2)), "interval unknown yet: decode");
        assert!(gate.pass(true, Some(SECOND)));
        assert!(!gate.pass(false, Some(SECOND + SECOND / 2)));
    }

    #[test]
    fn auto_decodes_everything_when_keyframes_are_rarer_than_samples() {
        // Keyframes every 4 s, sampling at 1 fps: the samples between keyframes need the deltas.
        let mut gate = KeyframeGate::new(KeyframeMode::Auto, 1.0);
        gate.pass(true, Some(0));
        gate.pass(true, Some(4 * SECOND));
        assert!(gate.pass(false, Some(5 * SECOND)));
    }
}

//! Building one camera's GStreamer pipeline and copying frames out of it.
//!
//! ```text
//! uridecodebin ─(decoder chosen by decoder.rs; DELTA_UNIT buffers dropped before it in
//!               keyframe mode; nvvidconv inserted after NVMM decoders)─▶ videorate drop-only
//!   ─▶ video/x-raw,framerate=sample_fps ─▶ videoconvert ─▶ I420 | NV12 | Y42B | Y444 | RGB ─▶ appsink (max 1 buffer)
//! ```
//! Decoders emit 4:2:0 (I420, or NV12 from hardware), which `videoconvert` passes through (other
//! formats, e.g. 10-bit, it converts to the nearest of these); the
//! conversion to RGB happens once, in `copy_frame`, straight from the mapped buffer into the
//! frame Glimpse keeps (yuvutils' SIMD kernels: much cheaper than `videoconvert` to RGB plus a
//! copy; measured in docs/benchmarks.md).
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
use super::uri::SourceKind;
use super::{CameraConfig, Failure, KeyframeMode, Transport};

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
        "videorate name=rate drop-only=true ! video/x-raw,framerate={}/{} ! videoconvert ! video/x-raw,format={{I420,NV12,Y42B,Y444,RGB}} ! \
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
    let index = match camera.uri.kind() {
        SourceKind::Test => {
            return Ok(Some("videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=15/1".into()))
        }
        SourceKind::Csi(index) => index,
        _ => return Ok(None),
    };
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

fn add_uridecodebin(
    pipeline: &gst::Pipeline,
    camera: &CameraConfig,
    target: &gst::Pad,
    probes: Arc<Probes>,
    hardware_failed: bool,
) -> anyhow::Result<()> {
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
    let keyframes_only = camera.keyframes == KeyframeMode::Always;
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
        if keyframes_only && element.find_property("thread-type").is_some() {
            // libav's frame threading holds back one output frame per extra thread: with
            // keyframes a second apart that is seconds of delay and idle threads. Slices only.
            element.set_property_from_str("thread-type", "slice");
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
        let result =
            if nvmm { link_through_nvvidconv(&bin, pad, &target) } else { pad.link(&target).map(|_| ()).map_err(|e| format!("{e:?}")) };
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
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Copies a sample out of GStreamer as RGB (converting I420/NV12 with the caps' colour matrix
/// and range, dropping row padding) with its timestamp in milliseconds.
pub fn copy_frame(sample: &gst::Sample) -> anyhow::Result<(image::RgbImage, u64)> {
    let buffer = sample.buffer().context("sample without a buffer")?;
    let caps = sample.caps().context("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).context("unreadable video caps")?;
    let frame =
        gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(|_| anyhow::anyhow!("cannot map the video buffer"))?;
    let image = frame_to_rgb(&frame)?;
    let pts_ms = buffer.pts().map_or(0, |t| t.mseconds());
    Ok((image, pts_ms))
}

fn frame_to_rgb(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> anyhow::Result<image::RgbImage> {
    use yuvutils_rs::{YuvBiPlanarImage, YuvConversionMode, YuvPlanarImage};
    let info = frame.info();
    let (w, h) = (info.width(), info.height());
    let plane = |i: u32| -> anyhow::Result<(&[u8], u32)> {
        let data = frame.plane_data(i).with_context(|| format!("video frame without plane {i}"))?;
        let stride = u32::try_from(frame.plane_stride()[i as usize]).context("negative stride")?;
        Ok((data, stride))
    };
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    let (range, matrix) = yuv_colorimetry(&info.colorimetry());
    let converted = match info.format() {
        format @ (gst_video::VideoFormat::I420 | gst_video::VideoFormat::Y42b | gst_video::VideoFormat::Y444) => {
            let ((y, ys), (u, us), (v, vs)) = (plane(0)?, plane(1)?, plane(2)?);
            let planar =
                YuvPlanarImage { y_plane: y, y_stride: ys, u_plane: u, u_stride: us, v_plane: v, v_stride: vs, width: w, height: h };
            let convert = match format {
                gst_video::VideoFormat::I420 => yuvutils_rs::yuv420_to_rgb,
                gst_video::VideoFormat::Y42b => yuvutils_rs::yuv422_to_rgb,
                _ => yuvutils_rs::yuv444_to_rgb,
            };
            convert(&planar, &mut rgb, w * 3, range, matrix)
        }
        gst_video::VideoFormat::Nv12 => {
            let ((y, ys), (uv, uvs)) = (plane(0)?, plane(1)?);
            let uv = tight_rows(uv, uvs as usize, w.div_ceil(2) as usize * 2, h.div_ceil(2) as usize)?;
            let bi = YuvBiPlanarImage { y_plane: y, y_stride: ys, uv_plane: &uv, uv_stride: w.div_ceil(2) * 2, width: w, height: h };
            yuvutils_rs::yuv_nv12_to_rgb(&bi, &mut rgb, w * 3, range, matrix, YuvConversionMode::Balanced)
        }
        gst_video::VideoFormat::Rgb => {
            let (data, stride) = plane(0)?;
            let row_bytes = w as usize * 3;
            for (row, out) in rgb.chunks_exact_mut(row_bytes).enumerate() {
                let start = row * stride as usize;
                out.copy_from_slice(data.get(start..start + row_bytes).context("video frame shorter than its caps")?);
            }
            Ok(())
        }
        other => anyhow::bail!("unexpected frame format {other:?} (the pipeline asks for I420, NV12, Y42B, Y444 or RGB)"),
    };
    converted.map_err(|e| anyhow::anyhow!("converting a {:?} frame to RGB: {e:?}", info.format()))?;
    image::RgbImage::from_raw(w, h, rgb).context("frame size mismatch")
}

/// A plane's rows without their padding: yuvutils wants NV12's chroma plane exactly
/// `width × rows` long. Borrowed when there is no padding (every common frame size).
fn tight_rows(data: &[u8], stride: usize, width: usize, rows: usize) -> anyhow::Result<std::borrow::Cow<'_, [u8]>> {
    let short = || anyhow::anyhow!("video plane shorter than its caps");
    if stride == width {
        return Ok(std::borrow::Cow::Borrowed(data.get(..width * rows).ok_or_else(short)?));
    }
    let mut packed = Vec::with_capacity(width * rows);
    for row in 0..rows {
        packed.extend_from_slice(data.get(row * stride..row * stride + width).ok_or_else(short)?);
    }
    Ok(std::borrow::Cow::Owned(packed))
}

/// The YUV → RGB matrix and range GStreamer's caps declare; unknown values fall back to what
/// `videoconvert` assumes for them (BT.601 limited range for SD, BT.709 otherwise).
fn yuv_colorimetry(c: &gst_video::VideoColorimetry) -> (yuvutils_rs::YuvRange, yuvutils_rs::YuvStandardMatrix) {
    use gst_video::{VideoColorMatrix as M, VideoColorRange as R};
    use yuvutils_rs::{YuvRange, YuvStandardMatrix};
    let range = match c.range() {
        R::Range0_255 => YuvRange::Full,
        _ => YuvRange::Limited,
    };
    let matrix = match c.matrix() {
        M::Bt601 => YuvStandardMatrix::Bt601,
        M::Bt2020 => YuvStandardMatrix::Bt2020,
        M::Smpte240m => YuvStandardMatrix::Smpte240,
        M::Fcc => YuvStandardMatrix::Bt470_6,
        _ => YuvStandardMatrix::Bt709,
    };
    (range, matrix)
}

/// The text of an ERROR on the bus, naming the element, with GStreamer's debug detail (which
/// carries e.g. the RTSP status code).
/// An ERROR message as a [`Failure`], classified by its error domain and code.
pub fn bus_error(msg: &gst::message::Error) -> Failure {
    let element = msg.src().map(|s| s.name().to_string()).unwrap_or_else(|| "pipeline".into());
    let detail = match msg.debug() {
        Some(debug) => format!("{element}: {} ({})", msg.error(), debug.lines().last().unwrap_or_default()),
        None => format!("{element}: {}", msg.error()),
    };
    Failure::classified(msg.error().kind::<gst::ResourceError>(), detail)
}

/// The first ERROR on the bus, waiting up to half a second for it to be posted.
pub fn first_error(bus: &gst::Bus) -> Option<Failure> {
    bus.timed_pop_filtered(gst::ClockTime::from_mseconds(500), &[gst::MessageType::Error]).and_then(|msg| match msg.view() {
        gst::MessageView::Error(err) => Some(bus_error(err)),
        _ => None,
    })
}

pub const PULL_TIMEOUT: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    /// A photo (odd width: padded rows) in `format`, optionally converted further by
    /// videoconvert to `then`.
    fn test_frame(format: &str, colorimetry: &str, then: Option<&str>) -> gst::Sample {
        crate::source::init().expect("GStreamer initialises");
        let photo = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/media/photos/chelsea.png");
        let then = then.map(|f| format!("! videoconvert dither=none ! video/x-raw,format={f}")).unwrap_or_default();
        let description = format!(
            "filesrc location={photo} ! pngdec ! videoconvert ! video/x-raw,format={format},colorimetry={colorimetry} {then} \
             ! appsink name=sink"
        );
        let pipeline = gst::parse::launch(&description).expect("valid test pipeline").downcast::<gst::Pipeline>().expect("a pipeline");
        let sink = pipeline.by_name("sink").and_then(|s| s.downcast::<gst_app::AppSink>().ok()).expect("appsink");
        pipeline.set_state(gst::State::Playing).expect("plays");
        let sample = sink.pull_sample().expect("one frame");
        pipeline.set_state(gst::State::Null).expect("stops");
        sample
    }

    #[test]
    fn yuv_frames_become_the_same_rgb_as_videoconvert_makes() {
        for colorimetry in ["bt709", "bt601", "bt2020"] {
            for format in ["I420", "NV12", "Y42B", "Y444"] {
                let (ours, _) = copy_frame(&test_frame(format, colorimetry, None)).expect("YUV frame");
                let (reference, _) = copy_frame(&test_frame(format, colorimetry, Some("RGB"))).expect("RGB frame");
                assert_eq!(ours.dimensions(), (451, 300), "{format}: odd sizes keep every pixel");
                let diffs: Vec<i32> = ours.as_raw().iter().zip(reference.as_raw()).map(|(a, b)| (*a as i32 - *b as i32).abs()).collect();
                let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
                let max = diffs.iter().copied().max().unwrap_or(0);
                // Measured: mean 2.4 to 2.7 levels (the two round differently), max 6 where
                // chroma is full-size and up to 18 where it is upsampled (different filters).
                assert!(mean < 3.5 && max <= 32, "{format} {colorimetry}: mean {mean:.2}, max {max} levels from videoconvert");
            }
        }
    }

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

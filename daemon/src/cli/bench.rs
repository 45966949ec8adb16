//! `glimpse bench ingest FILE`: CPU cost of video ingest, each figure measured in the same run
//! as its reference (docs/benchmarks.md):
//!
//! - reference A: `gst-launch-1.0 filesrc ! qtdemux ! h264parse ! avdec_h264 ! fakesink`
//!   (decode every frame), CPU from `getrusage(RUSAGE_CHILDREN)`;
//! - reference B: the same pipeline in this process with delta units dropped before the decoder
//!   (a bare keyframe-only decode);
//! - Glimpse's own ingest at `sample_fps` (sampling, RGB conversion, frames copied out, as the
//!   daemon does) with `keyframes = "never"` and `"always"`.
//!
//! CPU is user + system time, reported per minute of video.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use gstreamer as gst;
use gstreamer::prelude::*;
use nix::sys::resource::{getrusage, UsageWho};

use crate::detect::DetectorConfig;
use crate::source::pipeline::{self, copy_frame, Probes};
use crate::source::{CameraConfig, DecoderMode, KeyframeMode, Transport};

fn cpu_seconds(who: UsageWho) -> anyhow::Result<f64> {
    let usage = getrusage(who).context("getrusage")?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// Runs a pipeline description to EOS; with `keyframes_only`, drops delta units before the
/// element named `dec`.
fn run_to_eos(description: &str, keyframes_only: bool) -> anyhow::Result<()> {
    let pipeline = gst::parse::launch(description)?.downcast::<gst::Pipeline>().map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    if keyframes_only {
        let pad = pipeline.by_name("dec").and_then(|d| d.static_pad("sink")).context("decoder sink pad")?;
        pad.add_probe(gst::PadProbeType::BUFFER, |_, info| match info.buffer() {
            Some(b) if b.flags().contains(gst::BufferFlags::DELTA_UNIT) => pipeline::drop_buffer(info),
            _ => gst::PadProbeReturn::Ok,
        });
    }
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().context("bus")?;
    let result = match bus.timed_pop_filtered(gst::ClockTime::NONE, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(e) => Err(anyhow::anyhow!("{}", e.error())),
            _ => Ok(()),
        },
        None => Ok(()),
    };
    pipeline.set_state(gst::State::Null)?;
    result
}

/// Glimpse's ingest of `file` to EOS; returns (frames sampled, video duration in seconds).
fn glimpse_ingest(file: &Path, sample_fps: f64, keyframes: KeyframeMode) -> anyhow::Result<(u64, f64)> {
    let camera = CameraConfig {
        name: "bench".into(),
        uri: crate::source::CameraUri::from(format!("file://{}", file.canonicalize()?.display())),
        sample_fps,
        stall_timeout_s: 10.0,
        decoder: DecoderMode::Software,
        keyframes,
        transport: Transport::Tcp,
        r#loop: false,
    };
    let built = pipeline::build(&camera, Arc::new(Probes::default()), false)?;
    built.pipeline.set_state(gst::State::Playing)?;
    let bus = built.pipeline.bus().context("bus")?;
    let (mut frames, mut last_pts_ms) = (0u64, 0u64);
    loop {
        if let Some(sample) = built.sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            let (_, pts) = copy_frame(&sample)?;
            frames += 1;
            last_pts_ms = pts;
            continue;
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Eos, gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                anyhow::bail!("{}", e.error());
            }
            break;
        }
    }
    let duration = built.pipeline.query_duration::<gst::ClockTime>().map_or(last_pts_ms as f64 / 1000.0, |d| d.seconds_f64());
    built.pipeline.set_state(gst::State::Null)?;
    Ok((frames, duration))
}

pub fn ingest(file: &Path, sample_fps: f64) -> anyhow::Result<()> {
    crate::source::init()?;
    let location = file.display().to_string();
    let decode = format!("filesrc location=\"{location}\" ! qtdemux ! h264parse ! avdec_h264 name=dec ! fakesink sync=false");

    let before = cpu_seconds(UsageWho::RUSAGE_CHILDREN)?;
    let status = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(decode.replace('"', "").split_whitespace())
        .status()
        .context("running gst-launch-1.0 (gstreamer1.0-tools)")?;
    anyhow::ensure!(status.success(), "gst-launch-1.0 failed on {location}");
    let reference_full = cpu_seconds(UsageWho::RUSAGE_CHILDREN)? - before;

    let measure = |f: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let before = cpu_seconds(UsageWho::RUSAGE_SELF)?;
        f()?;
        Ok(cpu_seconds(UsageWho::RUSAGE_SELF)? - before)
    };
    let reference_keyframes = measure(&|| run_to_eos(&decode, true))?;
    let timed_ingest = |keyframes| -> anyhow::Result<(f64, u64, f64)> {
        let before = cpu_seconds(UsageWho::RUSAGE_SELF)?;
        let (frames, duration) = glimpse_ingest(file, sample_fps, keyframes)?;
        Ok((cpu_seconds(UsageWho::RUSAGE_SELF)? - before, frames, duration))
    };
    let (glimpse_full, full_frames, duration) = timed_ingest(KeyframeMode::Never)?;
    let (glimpse_keyframes, keyframe_frames, _) = timed_ingest(KeyframeMode::Always)?;
    let sampled = (full_frames, keyframe_frames);
    let per_minute = |cpu: f64| cpu / (duration / 60.0).max(1e-9);
    println!("ingest of {location}: {duration:.1} s of video, sample_fps {sample_fps}");
    println!("  A  gst-launch full decode (reference)        {:7.2} CPU-s per minute of video", per_minute(reference_full));
    println!("  B  bare keyframe-only decode (reference)     {:7.2} CPU-s per minute of video", per_minute(reference_keyframes));
    println!("  C  glimpse, keyframes = never   ({:4} frames) {:7.2} CPU-s per minute of video", sampled.0, per_minute(glimpse_full));
    println!("  D  glimpse, keyframes = always  ({:4} frames) {:7.2} CPU-s per minute of video", sampled.1, per_minute(glimpse_keyframes));
    println!(
        "  ratios: D/B {:.2} (goal <= 1.2)   C/A {:.2}   A/D {:.1} (saved by keyframe-only sampling)",
        glimpse_keyframes / reference_keyframes,
        glimpse_full / reference_full,
        reference_full / glimpse_keyframes
    );
    Ok(())
}

/// `glimpse bench models`: tract inference time on the model files, with inputs every engine
/// can reproduce (every value 0.5), for `models/bench.py` to set beside onnxruntime's.
pub fn models(detector: &Path, embedder: &Path, runs: usize, threads: usize) -> anyhow::Result<()> {
    use crate::model::tract::OnnxFile;
    crate::model::set_inference_threads(threads);

    // The plans the daemon makes (DETR per input size, CLIP for one crop), and the two batched
    // CLIP plans it does not make, as evidence for that choice.
    let time = |file: &OnnxFile, plan: &crate::model::tract::Plan, shape: [usize; 4], calls: usize| -> anyhow::Result<f64> {
        let input = constant_input(shape);
        file.run(plan, input.clone())?; // warm-up
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let start = std::time::Instant::now();
            for _ in 0..calls {
                file.run(plan, input.clone())?;
            }
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    };
    let detr = OnnxFile::open(detector)?;
    let clip = OnnxFile::open(embedder)?;
    let detr_plan = detr.plan([1, 3, 640, 640])?;
    let clip_plan = clip.plan([1, 3, 224, 224])?;
    let clip_b8_plan = clip.plan([8, 3, 224, 224])?;
    let clip_any_plan = clip.plan_any_batch([3, 224, 224])?;
    let results = serde_json::json!({
        "engine": "tract",
        "threads": threads,
        "detr_640_ms": time(&detr, &detr_plan, [1, 3, 640, 640], 1)?,
        "clip_b1_ms": time(&clip, &clip_plan, [1, 3, 224, 224], 1)?,
        "clip_b8_ms": time(&clip, &clip_plan, [1, 3, 224, 224], 8)?,
        "clip_b8_batch8_plan_ms": time(&clip, &clip_b8_plan, [8, 3, 224, 224], 1)?,
        "clip_b1_any_batch_plan_ms": time(&clip, &clip_any_plan, [1, 3, 224, 224], 1)?,
        "clip_b8_any_batch_plan_ms": time(&clip, &clip_any_plan, [8, 3, 224, 224], 1)?,
    });
    println!("{results}");
    Ok(())
}

fn engine_named(engine: &str, library: Option<PathBuf>, threads: usize) -> anyhow::Result<crate::model::Engine> {
    use crate::model::{Engine, EngineKind, InferenceConfig, Provider};
    let kind = match engine {
        "tract" => EngineKind::Tract,
        "onnxruntime" => EngineKind::Onnxruntime,
        other => anyhow::bail!("--engine {other:?}: choose tract or onnxruntime"),
    };
    Ok(Engine::start(&InferenceConfig { engine: kind, onnxruntime_library: library, providers: vec![Provider::Cpu] }, threads)?)
}

/// Median milliseconds of `runs` calls of `work` (after one warm-up call).
fn median_ms(runs: usize, mut work: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    median_ms_of(runs, || (), |()| work())
}

/// Median milliseconds of `runs` calls of `work`, each on a fresh `prepare()` made before the
/// clock starts (after one warm-up call).
fn median_ms_of<T>(runs: usize, mut prepare: impl FnMut() -> T, mut work: impl FnMut(T) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    work(prepare())?;
    let mut times = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let input = prepare();
        let start = Instant::now();
        work(input)?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// `glimpse bench frames`: the whole per-frame time on real frames, one thread: detection with
/// `config`'s family, then every detection of at least `min_box_px` cropped and embedded.
/// Prints the report and returns the cameras at 1 fps that one core keeps up with.
pub fn frames(config: &DetectorConfig, embedder: &Path, frames: &[PathBuf], runs: usize, engine: &str) -> anyhow::Result<f64> {
    use crate::detect::{Detector, ObjectDetector};
    use crate::embed::{clamp_box, Embedder, EmbedderConfig};
    use crate::model::FormPolicy;
    let engine = engine_named(engine, None, 1)?;
    let mut detector = Detector::load(config, &engine, None)?;
    let embedder_config = EmbedderConfig { model: embedder.to_owned(), text_model: None, tokenizer: None, form: FormPolicy::AsConfigured };
    let mut embedder = Embedder::load(&embedder_config, &engine, None)?;
    let images = frames
        .iter()
        .map(|f| image::open(f).map(|i| i.to_rgb8()).with_context(|| format!("cannot read {}", f.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut objects = 0;
    let per_frame = median_ms(runs, || {
        objects = 0;
        for frame in &images {
            for d in detector.detect(frame)? {
                if let Some(pixel) = clamp_box(&d, frame.width(), frame.height(), config.min_box_px) {
                    embedder.embed(&crate::embed::crop(frame, pixel))?;
                    objects += 1;
                }
            }
        }
        Ok(())
    })? / images.len() as f64;
    let report = serde_json::json!({
        "detector": detector.head().to_string(),
        "engine": engine.report().engine,
        "threads": 1,
        "frames": images.len(),
        "objects_per_frame": objects as f64 / images.len() as f64,
        "frame_ms": per_frame,
        "cameras_per_core_at_1_fps": 1000.0 / per_frame,
    });
    println!("{report}");
    Ok(1000.0 / per_frame)
}

/// The regression guard of `glimpse bench frames --min-cameras-per-core`: `Err` names the
/// shortfall when this box keeps up with fewer cameras than `wanted`.
pub fn keeps_up(cameras: f64, wanted: Option<f64>) -> Result<(), String> {
    match wanted {
        Some(wanted) if cameras < wanted => {
            Err(format!("regression: one core keeps up with {cameras:.2} cameras at 1 fps, below --min-cameras-per-core {wanted}"))
        }
        _ => Ok(()),
    }
}

/// `glimpse bench overhead`: what the daemon does per frame beyond the model calls.
pub fn overhead(detector: &Path, embedder: &Path, image: &Path, crops: u32, runs: usize, engine: &str) -> anyhow::Result<()> {
    use crate::detect::{resize_size, Detector, DetectorConfig, Family, ObjectDetector};
    use crate::embed::{Embedder, EmbedderConfig, PixelBox};
    use crate::model::{normalized_chw, FormPolicy, Model, Resize, ResizeFilter, Shapes};
    let engine = engine_named(engine, None, 1)?;
    let frame = image::open(image).with_context(|| format!("cannot read {}", image.display()))?.to_rgb8();
    let (w, h) = frame.dimensions();
    let config = DetectorConfig {
        model: detector.to_owned(),
        family: Family::Detr,
        threshold: None,
        shortest_edge: 800,
        longest_edge: 1333,
        min_box_px: 8,
        form: FormPolicy::AsConfigured,
    };
    let mut ours_detector = Detector::load(&config, &engine, None)?;
    let mut ours_embedder = Embedder::load(
        &EmbedderConfig { model: embedder.to_owned(), text_model: None, tokenizer: None, form: FormPolicy::AsConfigured },
        &engine,
        None,
    )?;
    // Boxes of several sizes and shapes across the frame, as detections would give.
    let boxes: Vec<PixelBox> = (0..crops.max(1))
        .map(|i| PixelBox { x: (i * w / (crops + 1)) % (w / 2), y: (i * h / (crops + 2)) % (h / 2), w: w / 4 + i * 7, h: h / 3 + i * 5 })
        .collect();
    let crops: Vec<image::RgbImage> = boxes.iter().map(|b| crate::embed::crop(&frame, *b)).collect();
    let ours = median_ms(runs, || {
        ours_detector.detect(&frame)?;
        for crop in &crops {
            ours_embedder.embed(crop)?;
        }
        Ok(())
    })?;
    // The same inputs, made before the clock starts: only the model calls are timed.
    let (rh, rw) = resize_size(h, w, config.shortest_edge, config.longest_edge);
    let mut resize = Resize::default();
    let detr_input = normalized_chw(&resize.to(&frame, rw, rh, ResizeFilter::Bilinear), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    let mut detr = Model::open(&engine, detector, Shapes::VaryingPixels { max_plans: 1 })?;
    let mut clip = Model::open(&engine, embedder, Shapes::Pixels([1, 3, 224, 224]))?;
    let clip_input = crate::model::Input::Pixels { shape: [1, 3, 224, 224], data: vec![0.5; 3 * 224 * 224] };
    let bare = median_ms_of(
        runs,
        || (detr_input.clone(), vec![clip_input.clone(); crops.len()]),
        |(frame_input, crop_inputs)| {
            detr.run(frame_input)?;
            for input in crop_inputs {
                clip.run(input)?;
            }
            Ok(())
        },
    )?;
    let simd_resize = median_ms(runs, || {
        resize.to(&frame, rw, rh, ResizeFilter::Bilinear);
        Ok(())
    })?;
    let image_resize = median_ms(runs, || {
        image::imageops::resize(&frame, rw, rh, image::imageops::FilterType::Triangle);
        Ok(())
    })?;
    // The frame's snapshot, as the analyzer encodes it with [snapshots]' defaults.
    let defaults = crate::crops::SnapshotsConfig::default();
    let mut snapshot_bytes = 0;
    let snapshot = median_ms(runs, || {
        snapshot_bytes = crate::crops::encode(&frame, defaults.max_px, defaults.quality)?.len();
        Ok(())
    })?;
    let report = serde_json::json!({
        "engine": engine.report().engine, "frame": [w, h], "detr_input": [rw, rh], "crops": crops.len(),
        "frame_ms_ours": ours, "frame_ms_bare_model_calls": bare, "ratio_ours_over_bare": ours / bare,
        "detr_resize_ms_fast_image_resize": simd_resize, "detr_resize_ms_image_crate": image_resize,
        "snapshot_ms": snapshot, "snapshot_bytes": snapshot_bytes, "ratio_snapshot_over_frame": snapshot / ours,
        "plans_held": ours_detector.plans_held(),
    });
    println!("{report:#}");
    Ok(())
}

/// `glimpse bench engine`: the daemon's model calls (`model::Model::run`, input packing and
/// output copies included) on `engine`, with every input value 0.5 as in `bench models`.
pub fn engine(detector: &Path, embedder: &Path, runs: usize, threads: usize, engine: &str, library: Option<PathBuf>) -> anyhow::Result<()> {
    use crate::model::{Input, Model, Shapes};
    let engine = engine_named(engine, library, threads)?;
    // Inputs are made before the clock starts, as Python's side reuses its array: this times the
    // engine layer, not pre-processing (`bench overhead` has that).
    let time = |model: &mut Model, shape: [usize; 4]| {
        median_ms_of(
            runs,
            || Input::Pixels { shape, data: vec![0.5; shape.iter().product()] },
            |input| model.run(input).map(|_| ()).map_err(Into::into),
        )
    };
    let mut detr = Model::open(&engine, detector, Shapes::VaryingPixels { max_plans: 1 })?;
    let mut clip = Model::open(&engine, embedder, Shapes::Pixels([1, 3, 224, 224]))?;
    let report = serde_json::json!({
        "engine": engine.report(),
        "threads": threads,
        "provider": clip.provider(),
        "detr_640_ms": time(&mut detr, [1, 3, 640, 640])?,
        "clip_b1_ms": time(&mut clip, [1, 3, 224, 224])?,
    });
    println!("{report}");
    Ok(())
}

/// `glimpse bench profile`: where one model's time goes in tract, per operator kind and per node
/// (the evidence behind docs/benchmarks.md's path to parity).
pub fn profile(model: &Path, shape: [usize; 4], runs: usize, threads: usize, any_batch: bool) -> anyhow::Result<()> {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use crate::model::tract::OnnxFile;
    use tract_onnx::prelude::{TValue, TVec};

    crate::model::set_inference_threads(threads);
    let file = OnnxFile::open(model)?;
    let plan = if any_batch { file.plan_any_batch([shape[1], shape[2], shape[3]])? } else { file.plan(shape)? };
    let input = constant_input(shape);
    file.run(&plan, input.clone())?; // warm-up
    let mut by_node: HashMap<String, (String, Duration)> = HashMap::new();
    let started = Instant::now();
    for _ in 0..runs.max(1) {
        let mut state = plan.spawn()?;
        state.run_plan_with_eval(tvec_of(input.clone()), |ctx, op_state, node, inputs: TVec<TValue>| {
            let start = Instant::now();
            let outputs = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
            let entry = by_node.entry(node.name.clone()).or_insert_with(|| (node.op().name().to_string(), Duration::ZERO));
            entry.1 += start.elapsed();
            outputs
        })?;
    }
    let total = started.elapsed().as_secs_f64() * 1000.0 / runs.max(1) as f64;
    let mut by_op: HashMap<&str, (usize, Duration)> = HashMap::new();
    for (op, time) in by_node.values() {
        let e = by_op.entry(op.as_str()).or_default();
        e.0 += 1;
        e.1 += *time;
    }
    let per_run = |d: &Duration| d.as_secs_f64() * 1000.0 / runs.max(1) as f64;
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by_key(|op| std::cmp::Reverse(op.1 .1));
    println!("{} {shape:?}, {threads} thread(s): {total:.1} ms per run", model.display());
    println!("{:>9} {:>6}  operator (nodes)", "ms/run", "share");
    for (op, (nodes, time)) in ops.iter().take(15) {
        println!("{:9.2} {:5.1}%  {op} ({nodes})", per_run(time), 100.0 * per_run(time) / total);
    }
    let mut nodes: Vec<_> = by_node.into_iter().collect();
    nodes.sort_by_key(|node| std::cmp::Reverse(node.1 .1));
    println!("slowest nodes:");
    for (name, (op, time)) in nodes.iter().take(10) {
        println!("{:9.2}  {op}  {name}", per_run(time));
    }
    Ok(())
}

/// An input every engine can reproduce: every value 0.5 (models/bench.py uses the same).
fn constant_input(shape: [usize; 4]) -> tract_onnx::prelude::Tensor {
    tract_onnx::prelude::tract_ndarray::Array4::<f32>::from_elem((shape[0], shape[1], shape[2], shape[3]), 0.5).into()
}

fn tvec_of(input: tract_onnx::prelude::Tensor) -> tract_onnx::prelude::TVec<tract_onnx::prelude::TValue> {
    use tract_onnx::prelude::*;
    tvec!(input.into())
}

/// `glimpse bench search`: latency of a local search over `records` random `dim`-d records, warm,
/// against an exact f32 scan of the same index in the same run; the process's anonymous memory
/// before and after the queries; and whether each top 10 equals the exact scan's. The index is
/// made in `dir` once and reused while it holds `records` records.
pub fn search(records: u64, dim: usize, queries: usize, dir: &Path) -> anyhow::Result<()> {
    use crate::index::{Index, Query, SearchConfig};
    let config = SearchConfig { max_bytes: crate::validate::ByteSize(u64::MAX / 2), retain_days: 36_500.0, ..SearchConfig::default() };
    let mut index = Index::open(dir, &config)?;
    if index.len() != records {
        drop(index);
        let _ = std::fs::remove_dir_all(dir.join("index"));
        index = Index::open(dir, &config)?;
        fill_index(&mut index, records, dim)?;
    }
    let anonymous_before = anonymous_kib();
    let mut fast = Vec::with_capacity(queries);
    let mut exact = Vec::with_capacity(queries);
    let mut equal = 0;
    for q in 0..=queries {
        let query = Query { vector: crate::index::random_unit(1_000_000_007 + q as u64, dim), top_k: 10, ..Query::default() };
        let started = Instant::now();
        let hits = index.search(&query)?;
        let fast_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let reference = index.exact_top(&query.vector, 10);
        let exact_ms = started.elapsed().as_secs_f64() * 1000.0;
        if q == 0 {
            continue; // the first query warms the page cache
        }
        let reference_ids: Vec<String> = reference.iter().map(|(_, seg, row)| index.id_of(*seg, *row)).collect::<Result<_, _>>()?;
        equal += usize::from(hits.iter().map(|h| &h.id).eq(reference_ids.iter()));
        fast.push(fast_ms);
        exact.push(exact_ms);
    }
    let anonymous_after = anonymous_kib();
    fast.sort_by(f64::total_cmp);
    exact.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    let report = serde_json::json!({
        "records": records, "dimension": dim, "queries": queries, "index_bytes": index.bytes(),
        "search_ms_p50": median(&fast), "search_ms_max": fast.last(),
        "exact_scan_ms_p50": median(&exact), "ratio_exact_over_search": median(&exact) / median(&fast),
        "top10_equal_to_exact": format!("{equal}/{queries}"),
        "anonymous_kib_before": anonymous_before, "anonymous_kib_after": anonymous_after,
    });
    println!("{report:#}");
    Ok(())
}

fn fill_index(index: &mut crate::index::Index, records: u64, dim: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let cameras = ["gate", "yard", "street", "door"];
    let labels = ["person", "car", "bicycle", "dog", "truck"];
    let mut batch = Vec::with_capacity(1000);
    for i in 0..records {
        let metadata = crate::record::Metadata {
            device: "bench".into(),
            camera: cameras[(i % 4) as usize].into(),
            ts: 1_796_000_000_000 + i as i64 * 100,
            pts_ms: 0,
            label: labels[(i % 5) as usize].into(),
            score: 0.95,
            x: 10,
            y: 20,
            w: 64,
            h: 128,
            frame_w: 1920,
            frame_h: 1080,
            track_id: Some(format!("{i}.0")),
            crop: Some(format!("bench/{i}.jpg")),
            snapshot: None,
            user_label: None,
        };
        batch.push(crate::record::Record {
            id: format!("bench:{}:{i}:0", cameras[(i % 4) as usize]),
            values: crate::index::random_unit(i, dim),
            metadata,
        });
        if batch.len() == 1000 || i + 1 == records {
            let first = i + 1 - batch.len() as u64;
            index.add(batch.iter().enumerate().map(|(j, r)| (first + j as u64, r)))?;
            batch.clear();
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!("bench search: {} of {records} records indexed ({:.0} s)", i + 1, started.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

/// The process's anonymous memory (`/proc/self/smaps_rollup` "Anonymous"), KiB.
fn anonymous_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("Anonymous:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// `glimpse bench crops`: what keeping a crop costs per record — cropping, scaling to `max_px`
/// and JPEG encoding, as the analyzer does — against `image`'s bare JPEG encode of the same final
/// pixels, in the same run; and the bytes a crop takes.
pub fn crops(photos: &[std::path::PathBuf], max_px: u32, quality: u8, per_photo: usize) -> anyhow::Result<()> {
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    let mut bytes = 0u64;
    for (p, path) in photos.iter().enumerate() {
        let photo = image::open(path).with_context(|| format!("reading {}", path.display()))?.to_rgb8();
        let (w, h) = photo.dimensions();
        for i in 0..per_photo {
            // Boxes from a quarter of the frame down to 1/8, spread over it.
            let (bw, bh) = ((w / 4).max(16) - (i as u32 * 7) % (w / 8).max(1), (h / 3).max(16) - (i as u32 * 5) % (h / 6).max(1));
            let (x, y) = ((i as u32 * 37 + p as u32 * 11) % (w - bw), (i as u32 * 23) % (h - bh));
            let b = crate::embed::PixelBox { x, y, w: bw, h: bh };
            let started = Instant::now();
            let jpeg = crate::crops::encode(&crate::embed::crop(&photo, b), max_px, quality)?;
            ours.push(started.elapsed().as_secs_f64() * 1000.0);
            bytes += jpeg.len() as u64;
            let pixels = image::load_from_memory(&jpeg)?.to_rgb8();
            let started = Instant::now();
            let mut reference = Vec::new();
            pixels.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut reference, quality))?;
            bare.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    ours.sort_by(f64::total_cmp);
    bare.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    let report = serde_json::json!({
        "records": ours.len(), "max_px": max_px, "quality": quality,
        "crop_encode_ms_p50": median(&ours), "bare_encode_ms_p50": median(&bare),
        "ratio_ours_over_bare": median(&ours) / median(&bare),
        "bytes_per_crop": bytes / ours.len().max(1) as u64,
    });
    println!("{report:#}");
    Ok(())
}

/// `glimpse bench text`: the text tower's latency per text (tokenizer + model), median of `runs`.
pub fn text(model: &Path, tokenizer: &Path, runs: usize) -> anyhow::Result<()> {
    let mut embedder = crate::embed::text::TextEmbedder::load(model, tokenizer, &crate::model::Engine::Tract)?;
    let texts = ["a red van", "a person walking a dog at the gate", "a delivery truck parked on the street at night"];
    let mut total = Vec::new();
    let mut tokenize = Vec::new();
    for _ in 0..runs {
        for text in texts {
            let started = Instant::now();
            embedder.token_ids(text)?;
            tokenize.push(started.elapsed().as_secs_f64() * 1000.0);
            let started = Instant::now();
            embedder.embed(text)?;
            total.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    total.sort_by(f64::total_cmp);
    tokenize.sort_by(f64::total_cmp);
    let report =
        serde_json::json!({ "model": model, "text_embed_ms_p50": total[total.len() / 2], "tokenize_ms_p50": tokenize[tokenize.len() / 2] });
    println!("{report:#}");
    Ok(())
}

/// `glimpse bench triggers`: what comparing one new record with `triggers` semantic triggers
/// costs on the inference thread, against embedding one crop with `embedder` (the reference, in
/// the same run). The triggers are random unit vectors that never match, so every trigger is
/// compared with every record, as in the common case.
pub fn triggers(embedder: &Path, photo: &Path, triggers: usize, records: usize) -> anyhow::Result<()> {
    let config = crate::embed::EmbedderConfig {
        model: embedder.to_owned(),
        text_model: None,
        tokenizer: None,
        form: crate::model::FormPolicy::AsConfigured,
    };
    let mut clip = crate::embed::Embedder::load(&config, &crate::model::Engine::Tract, None)?;
    let dimension = clip.dimension();
    let crop = crate::triggers::read_image(photo).map_err(|e| anyhow::anyhow!(e))?;
    clip.embed(&crop)?; // warm-up
    let mut embed_ms = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        clip.embed(&crop)?;
        embed_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    struct Random(usize, u64);
    impl crate::triggers::Lookups for Random {
        fn embed_text(&mut self, _: &str) -> Result<Vec<f32>, String> {
            self.1 += 1;
            Ok(crate::index::random_unit(self.1, self.0))
        }
        fn record_vector(&mut self, _: &str) -> Result<Vec<f32>, String> {
            Err("not used".into())
        }
    }
    let configs: Vec<crate::triggers::TriggerConfig> = (0..triggers)
        .map(|i| crate::triggers::TriggerConfig {
            name: format!("t{i}"),
            text: Some("x".into()),
            image: None,
            record: None,
            threshold: 0.99,
            cameras: None,
            labels: None,
            cooldown_s: 60.0,
            enabled: true,
        })
        .collect();
    let mut set = crate::triggers::Triggers::default();
    set.activate(crate::triggers::prepare(&configs, &mut Random(dimension, 0)), &mut clip);
    let made: Vec<crate::record::Record> = (0..records)
        .map(|i| {
            let mut record = crate::record::Record {
                id: format!("r{i}"),
                values: crate::index::random_unit(1_000_000 + i as u64, dimension),
                metadata: serde_json::from_value(serde_json::json!({
                    "device": "bench", "camera": "gate", "ts": 0, "pts_ms": 0, "label": "car", "score": 0.9,
                    "x": 0, "y": 0, "w": 1, "h": 1, "frame_w": 1, "frame_h": 1
                }))?,
            };
            record.metadata.track_id = Some(format!("t{i}"));
            Ok(record)
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let mut matches = 0;
    for (i, record) in made.iter().enumerate() {
        matches += set.check(record, i as i64).len();
    }
    let check_ms = started.elapsed().as_secs_f64() * 1000.0 / records as f64;
    embed_ms.sort_by(f64::total_cmp);
    let embed_p50 = embed_ms[embed_ms.len() / 2];
    let report = serde_json::json!({
        "embedder": embedder,
        "dimension": dimension,
        "triggers": triggers,
        "records": records,
        "matches": matches,
        "check_us_per_record": (check_ms * 1000.0 * 100.0).round() / 100.0,
        "embed_ms_per_crop_p50": (embed_p50 * 100.0).round() / 100.0,
        "check_share_of_one_embedding": check_ms / embed_p50,
    });
    println!("{report:#}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_guard_fails_only_below_the_cameras_asked_for() {
        assert!(super::keeps_up(3.09, Some(3.0)).is_ok());
        assert!(super::keeps_up(3.09, None).is_ok());
        let shortfall = super::keeps_up(2.5, Some(3.0)).expect_err("a regression");
        assert!(shortfall.contains("2.50 cameras") && shortfall.contains("--min-cameras-per-core 3"), "{shortfall}");
    }
}

//! The `glimpse` command line: parses arguments, sets up logging and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use glimpse::config::Config;
use glimpse::supervisor::{self, RunOptions};

/// Glimpse: cameras in, searchable embeddings out, on the device.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground until SIGTERM or SIGINT.
    Run {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Stop once every camera reached the end of its file and every record is delivered
        /// (to Pinecone when configured, else to the outbox).
        #[arg(long)]
        exit_when_done: bool,
        /// Seconds the syncer and MQTT get to finish after a stop signal (0 to 3600).
        #[arg(long, default_value_t = 10.0, value_parser = parse_stop_timeout)]
        stop_timeout_s: f64,
    },
    /// Validate the config, load both models and open every source; exit 2 listing every
    /// problem, 0 when all is well.
    Check {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Detect objects in image files: one JSON line per image, in argument order. Needs only
    /// the [detector] section of the config.
    Detect {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Embed whole image files, or texts with --text: one JSON line per image or text with the
    /// L2-normalised vector. Needs only the [embedder] section of the config.
    Embed {
        #[arg(long, short)]
        config: PathBuf,
        /// Texts to embed with CLIP's text tower (repeat for several), instead of images.
        #[arg(long = "text", conflicts_with = "images")]
        texts: Vec<String>,
        #[arg(required_unless_present = "texts")]
        images: Vec<PathBuf>,
    },
    /// Check or download model files listed in a manifest (models/manifest.toml).
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// Measure; see docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Find what the cameras saw, in the index on this device (docs/search.md): by a picture
    /// (--image) or by example (--like RECORD_ID). Exit 2 with the reason when it cannot run.
    Search {
        #[arg(long, short)]
        config: PathBuf,
        /// Words, e.g. "a red van" (needs [embedder] text_model and tokenizer).
        #[arg(long, group = "query")]
        text: Option<String>,
        /// A photo of what to find.
        #[arg(long, group = "query")]
        image: Option<PathBuf>,
        /// A record id: find what looks like it.
        #[arg(long, group = "query")]
        like: Option<String>,
        /// Only these cameras (repeat for several).
        #[arg(long = "camera")]
        cameras: Vec<String>,
        /// Only these labels (repeat for several).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Only this device's records.
        #[arg(long)]
        device: Option<String>,
        /// Captured at or after: RFC 3339 or an age such as 2h or 3d.
        #[arg(long)]
        since: Option<String>,
        /// Captured at or before: RFC 3339 or an age.
        #[arg(long)]
        until: Option<String>,
        /// How many matches, from 1 to 1000 (Pinecone's limit with metadata).
        #[arg(long, default_value_t = 10, value_parser = glimpse::cli::search::parse_top_k)]
        top_k: usize,
        /// Search the index on this device even when [pinecone] is configured.
        #[arg(long)]
        local: bool,
        /// One JSON line per match instead of a table.
        #[arg(long)]
        json: bool,
        /// Write one self-contained HTML page of the matches, thumbnails included.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Inspect or empty the local outbox (the daemon must be stopped).
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// The index on the device (read-only: runs beside the daemon).
    Index {
        #[command(subcommand)]
        action: IndexAction,
    },
}

#[derive(Subcommand)]
enum IndexAction {
    /// Write every record the index holds (within [search] retain_days) to stdout as JSON lines
    /// `{seq, id, values, metadata}`, oldest first.
    Export {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Check every file's sha256 against the manifest; exit 2 listing every mismatch.
    Verify {
        #[arg(long, default_value = "models/manifest.toml")]
        manifest: PathBuf,
    },
    /// Download every model that has a `url`, verify its sha256, then move it into place.
    Fetch {
        #[arg(long, default_value = "models/manifest.toml")]
        manifest: PathBuf,
        /// Where the files go (paths in the manifest are relative to it); default: the manifest's folder.
        #[arg(long)]
        dest: Option<PathBuf>,
    },
}

/// The model files a benchmark times, and how.
#[derive(clap::Args)]
struct ModelFiles {
    #[arg(long)]
    detector: PathBuf,
    #[arg(long)]
    embedder: PathBuf,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Inference threads (as `[device] inference_threads`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Median tract inference time (ms) of a DETR file at 640x640 and a CLIP file on batches of
    /// 1 and 8, as JSON; models/bench.py runs onnxruntime beside it.
    Models(ModelFiles),
    /// Median inference time (ms) through Glimpse's engine layer, the calls the daemon makes: a
    /// DETR file at 640x640 and a CLIP file on one crop, on tract or ONNX Runtime, as JSON;
    /// models/bench_engines.py runs Python's onnxruntime beside it on the same files and inputs.
    Engine {
        #[command(flatten)]
        files: ModelFiles,
        /// tract or onnxruntime.
        #[arg(long, default_value = "tract")]
        engine: String,
        /// ONNX Runtime's library (else ORT_DYLIB_PATH, else the system's library path).
        #[arg(long)]
        onnxruntime_library: Option<PathBuf>,
    },
    /// The daemon's per-frame work (pre-processing, DETR on the frame, CLIP on `crops` crops)
    /// against the bare model calls on the same inputs, and both resizers, in one run, as JSON.
    Overhead {
        #[arg(long)]
        detector: PathBuf,
        #[arg(long)]
        embedder: PathBuf,
        /// A photo or frame (PNG or JPEG).
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 5)]
        crops: u32,
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// tract or onnxruntime (ONNX Runtime's library from ORT_DYLIB_PATH).
        #[arg(long, default_value = "tract")]
        engine: String,
    },
    /// The whole per-frame work on real frames with one thread: detection (any family), then
    /// cropping and embedding every object it finds; and the cameras at 1 fps one core keeps up with.
    Frames {
        #[arg(long)]
        detector: PathBuf,
        #[arg(long)]
        embedder: PathBuf,
        /// Frames (PNG or JPEG), e.g. extracted from bikes.mp4 at 1 fps (docs/benchmarks.md).
        #[arg(required = true)]
        frames: Vec<PathBuf>,
        /// DETR only: its resize rule, as `[detector] shortest_edge` and `longest_edge`.
        #[arg(long, default_value_t = 800)]
        shortest_edge: u32,
        #[arg(long, default_value_t = 1333)]
        longest_edge: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// tract or onnxruntime (ONNX Runtime's library from ORT_DYLIB_PATH).
        #[arg(long, default_value = "tract")]
        engine: String,
        /// Regression guard: exit 1 when one core keeps up with fewer cameras at 1 fps than this
        /// (measured on the box it guards; docs/benchmarks.md).
        #[arg(long, value_parser = positive_number)]
        min_cameras_per_core: Option<f64>,
    },
    /// Time per tract operator and node for one model file (where inference time goes).
    Profile {
        model: PathBuf,
        /// Input shape batch,channels,height,width.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 3, 224, 224])]
        shape: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Plan with a symbolic batch axis (one plan for every batch size) instead of the shape's.
        #[arg(long)]
        any_batch: bool,
    },
    /// Local search latency over N random records against an exact scan in the same run.
    Search {
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        #[arg(long, default_value_t = 512)]
        dim: usize,
        #[arg(long, default_value_t = 20)]
        queries: usize,
        /// Where the index is made (and kept for the next run).
        #[arg(long, default_value = "target/bench-search")]
        dir: PathBuf,
    },
    /// Cost of keeping a crop per record against a bare JPEG encode, and its size.
    Crops {
        photos: Vec<PathBuf>,
        #[arg(long, default_value_t = 256)]
        max_px: u32,
        #[arg(long, default_value_t = 85)]
        quality: u8,
        #[arg(long, default_value_t = 50)]
        per_photo: usize,
    },
    /// The text tower's latency per text.
    Text {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Comparing a record with N semantic triggers, against embedding one crop.
    Triggers {
        #[arg(long)]
        embedder: PathBuf,
        /// A picture to embed as the reference crop.
        #[arg(long)]
        photo: PathBuf,
        #[arg(long, default_value_t = 100)]
        triggers: usize,
        #[arg(long, default_value_t = 10000)]
        records: usize,
    },
    /// CPU cost of ingesting an H.264 MP4 file, against gst-launch and a bare keyframe-only decode.
    Ingest {
        file: PathBuf,
        #[arg(long, default_value_t = 1.0)]
        sample_fps: f64,
    },
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Print pending records and bytes, the oldest pending record, dead letters (JSON).
    Stats {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write pending records (or, with --dead, dead letters) to stdout as JSON lines.
    Export {
        #[arg(long, short)]
        config: PathBuf,
        /// Export the records Pinecone rejected instead of the pending ones.
        #[arg(long)]
        dead: bool,
    },
    /// Delete every pending record (or, with --dead, every dead letter). Needs --yes.
    Purge {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        dead: bool,
        /// Confirm: the records are deleted for good.
        #[arg(long)]
        yes: bool,
    },
}

fn init_logging(format: LogFormat) {
    // ONNX Runtime narrates every graph rewrite at info; its warnings and errors are what matter.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("GLIMPSE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A number of seconds from 0 to 3600 (not NaN, not infinite).
fn parse_stop_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds from 0 to 3600")),
    }
}

/// One glibc malloc arena for every thread. The models are loaded on the main thread and run on
/// the inference thread; with an arena per thread, the memory loading frees cannot serve
/// inference's tensors (peak memory measured in docs/benchmarks.md).
fn share_one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread starts.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    share_one_malloc_arena();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { config: config_path, exit_when_done, stop_timeout_s } => {
            let config = match Config::load(&config_path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let options = RunOptions { exit_when_done, stop_timeout: Duration::from_secs_f64(stop_timeout_s) };
            match supervisor::run(&config_path, config, options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "glimpse cannot run");
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Models { action: ModelsAction::Verify { manifest } } => match glimpse::cli::models::verify(&manifest) {
            Ok(problems) if problems.is_empty() => ExitCode::SUCCESS,
            Ok(problems) => {
                for p in &problems {
                    println!("problem: {p}");
                }
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Models { action: ModelsAction::Fetch { manifest, dest } } => {
            exit_code(glimpse::cli::models::fetch(&manifest, dest.as_deref()))
        }
        Command::Detect { config, images } => inspect_exit(glimpse::cli::inspect::detect(&config, &images)),
        Command::Embed { config, texts, images: _ } if !texts.is_empty() => {
            inspect_exit(glimpse::cli::inspect::embed_texts(&config, &texts))
        }
        Command::Embed { config, images, .. } => inspect_exit(glimpse::cli::inspect::embed(&config, &images)),
        Command::Bench { what: BenchWhat::Profile { model, shape, runs, threads, any_batch } } => match <[usize; 4]>::try_from(shape) {
            Ok(shape) => exit_code(glimpse::cli::bench::profile(&model, shape, runs, threads, any_batch)),
            Err(_) => exit_code(Err(anyhow::anyhow!("--shape takes four numbers: batch,channels,height,width"))),
        },
        Command::Bench { what: BenchWhat::Models(ModelFiles { detector, embedder, runs, threads }) } => {
            exit_code(glimpse::cli::bench::models(&detector, &embedder, runs, threads))
        }
        Command::Bench {
            what: BenchWhat::Engine { files: ModelFiles { detector, embedder, runs, threads }, engine, onnxruntime_library },
        } => exit_code(glimpse::cli::bench::engine(&detector, &embedder, runs, threads, &engine, onnxruntime_library)),
        Command::Bench { what: BenchWhat::Overhead { detector, embedder, image, crops, runs, engine } } => {
            exit_code(glimpse::cli::bench::overhead(&detector, &embedder, &image, crops, runs, &engine))
        }
        Command::Bench {
            what: BenchWhat::Frames { detector, embedder, frames, shortest_edge, longest_edge, runs, engine, min_cameras_per_core },
        } => {
            let detector = glimpse::detect::DetectorConfig {
                model: detector,
                family: glimpse::detect::Family::Auto,
                threshold: None,
                shortest_edge,
                longest_edge,
                min_box_px: 8,
                form: glimpse::model::FormPolicy::AsConfigured,
            };
            match glimpse::cli::bench::frames(&detector, &embedder, &frames, runs, &engine) {
                Ok(cameras) => match glimpse::cli::bench::keeps_up(cameras, min_cameras_per_core) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(shortfall) => {
                        eprintln!("{shortfall}");
                        ExitCode::from(1)
                    }
                },
                Err(e) => exit_code(Err(e)),
            }
        }
        Command::Bench { what: BenchWhat::Search { records, dim, queries, dir } } => {
            exit_code(glimpse::cli::bench::search(records, dim, queries, &dir))
        }
        Command::Bench { what: BenchWhat::Crops { photos, max_px, quality, per_photo } } => {
            exit_code(glimpse::cli::bench::crops(&photos, max_px, quality, per_photo))
        }
        Command::Bench { what: BenchWhat::Text { model, tokenizer, runs } } => {
            exit_code(glimpse::cli::bench::text(&model, &tokenizer, runs))
        }
        Command::Bench { what: BenchWhat::Triggers { embedder, photo, triggers, records } } => {
            exit_code(glimpse::cli::bench::triggers(&embedder, &photo, triggers, records))
        }
        Command::Bench { what: BenchWhat::Ingest { file, sample_fps } } => exit_code(glimpse::cli::bench::ingest(&file, sample_fps)),
        Command::Outbox { action } => exit_code(outbox_command(action)),
        Command::Index { action: IndexAction::Export { config } } => exit_code(index_export(&config)),
        Command::Search { config, text, image, like, cameras, labels, device, since, until, top_k, local, json, html } => {
            let search =
                glimpse::cli::search::Search { config, text, image, like, cameras, labels, device, since, until, top_k, local, json, html };
            exit_code(glimpse::cli::search::run(&search).map_err(anyhow::Error::from))
        }
        Command::Check { config } => {
            let problems = glimpse::cli::check::check(&config);
            if problems.is_empty() {
                println!("{}: all checks passed", config.display());
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    println!("problem: {p}");
                }
                println!("{} problem(s) found", problems.len());
                ExitCode::from(2)
            }
        }
    }
}

/// 0 on success; 2 with the error (and its causes) on stderr.
/// A finite number above 0 (a guard of NaN or 0 would pass everything).
fn positive_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("{text:?} is not a number above 0")),
    }
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// 0 when every image was processed, 1 when some could not be read (their lines say why), 2
/// when nothing could run (config or model).
fn inspect_exit(result: anyhow::Result<glimpse::cli::inspect::Outcome>) -> ExitCode {
    match result {
        Ok(glimpse::cli::inspect::Outcome::AllDone) => ExitCode::SUCCESS,
        Ok(glimpse::cli::inspect::Outcome::SomeFailed(n)) => {
            eprintln!("{n} image(s) could not be processed; see their \"error\" lines");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn index_export(config: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let written = glimpse::cli::index::export(&config, &mut std::io::stdout().lock())?;
    eprintln!("exported {written} record(s) from the index on the device");
    Ok(())
}

fn outbox_command(action: OutboxAction) -> anyhow::Result<()> {
    use glimpse::cli::outbox as admin;
    use glimpse::outbox::Outbox;
    let config_path = match &action {
        OutboxAction::Stats { config } | OutboxAction::Export { config, .. } | OutboxAction::Purge { config, .. } => config,
    };
    let config = Config::load(config_path)?;
    let outbox = Outbox::open(&config.device.data_dir, &config.outbox)?;
    let mut stdout = std::io::stdout().lock();
    match action {
        OutboxAction::Stats { .. } => {
            serde_json::to_writer_pretty(&mut stdout, &admin::report(&outbox)?)?;
            println!();
        }
        OutboxAction::Export { dead: false, .. } => {
            let exported = admin::export_pending(&outbox, &mut stdout)?;
            eprintln!("exported {} pending record(s)", exported.records);
            if exported.corrupt > 0 {
                eprintln!("{} pending record(s) fail their checksum and were not exported (the daemon quarantines them)", exported.corrupt);
            }
        }
        OutboxAction::Export { dead: true, .. } => {
            let n = admin::export_dead(&outbox, &mut stdout)?;
            eprintln!("exported {n} dead letter(s)");
        }
        OutboxAction::Purge { yes: false, dead, .. } => {
            let report = admin::report(&outbox)?;
            let what =
                if dead { format!("{} dead letter(s)", report.dead_letters) } else { format!("{} pending record(s)", report.pending) };
            anyhow::bail!("this would delete {what} for good; run again with --yes to do it");
        }
        OutboxAction::Purge { dead: false, .. } => println!("deleted {} pending record(s)", outbox.purge_pending()?),
        OutboxAction::Purge { dead: true, .. } => println!("deleted {} dead letter(s)", outbox.purge_dead()?),
    }
    Ok(())
}

//! `glimpse models verify` and `glimpse models fetch`: model files against `models/manifest.toml`
//! (written by `models/export.py`). Fetch downloads each model that has a `url`, checks its
//! sha256 before it replaces anything, and skips files that are already right.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    model: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    /// Path relative to the manifest's directory.
    file: PathBuf,
    sha256: String,
    /// Where `fetch` downloads it from.
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the manifest {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid manifest", path.display()))
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks every file in the manifest; returns the problems (empty when all match).
pub fn verify(manifest_path: &Path) -> anyhow::Result<Vec<String>> {
    let manifest = read_manifest(manifest_path)?;
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    for entry in &manifest.model {
        let path = base.join(&entry.file);
        match sha256_of(&path) {
            Ok(sum) if sum.eq_ignore_ascii_case(&entry.sha256) => {
                println!("ok: {} ({}, sha256 {})", path.display(), entry.kind.as_deref().unwrap_or("model"), &sum[..16]);
            }
            Ok(sum) => problems.push(format!(
                "{}: sha256 is {sum}, the manifest says {}; fetch it again or re-export it",
                path.display(),
                entry.sha256
            )),
            Err(e) => problems.push(format!("{}: cannot read it ({e}); run `glimpse models fetch`", path.display())),
        }
    }
    Ok(problems)
}

/// Downloads every manifest entry with a `url` into `dest` (default: beside the manifest).
pub fn fetch(manifest_path: &Path, dest: Option<&Path>) -> anyhow::Result<()> {
    let manifest = read_manifest(manifest_path)?;
    let base = dest.map(Path::to_path_buf).unwrap_or_else(|| manifest_path.parent().unwrap_or(Path::new(".")).to_path_buf());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    crate::tls::use_ring();
    let client = reqwest::Client::builder().user_agent(concat!("glimpse/", env!("CARGO_PKG_VERSION"))).build()?;
    for entry in &manifest.model {
        let target = base.join(&entry.file);
        let Some(url) = &entry.url else {
            println!("skip: {} has no url in the manifest", entry.file.display());
            continue;
        };
        if sha256_of(&target).is_ok_and(|s| s.eq_ignore_ascii_case(&entry.sha256)) {
            println!("ok: {} is already present and verified", target.display());
            continue;
        }
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let partial = target.with_extension("part");
        runtime.block_on(download(&client, url, &partial))?;
        let sum = sha256_of(&partial)?;
        if !sum.eq_ignore_ascii_case(&entry.sha256) {
            let _ = std::fs::remove_file(&partial);
            anyhow::bail!("{url}: downloaded file has sha256 {sum}, the manifest says {}; nothing was replaced", entry.sha256);
        }
        std::fs::rename(&partial, &target).with_context(|| format!("cannot move the download to {}", target.display()))?;
        println!("fetched: {} (sha256 verified)", target.display());
    }
    Ok(())
}

async fn download(client: &reqwest::Client, url: &str, to: &Path) -> anyhow::Result<()> {
    let mut response = client.get(url).send().await.with_context(|| format!("cannot reach {url}"))?;
    anyhow::ensure!(response.status().is_success(), "{url} answered {}", response.status());
    let total = response.content_length();
    let mut file = std::fs::File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    let (mut done, mut reported) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await.with_context(|| format!("download of {url} broke off"))? {
        file.write_all(&chunk)?;
        done += chunk.len() as u64;
        // Progress every 16 MiB: model files are hundreds of MB on slow links.
        if done - reported >= 16 << 20 {
            reported = done;
            match total {
                Some(t) => eprintln!("  {url}: {} of {} MiB", done >> 20, t >> 20),
                None => eprintln!("  {url}: {} MiB", done >> 20),
            }
        }
    }
    file.sync_all()?;
    Ok(())
}

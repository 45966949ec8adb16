//! A real S3-compatible server in this process (s3s-fs: buckets are directories under a root)
//! on a loopback port, with SigV4 authentication on. It can be killed (dropped: connections
//! cut, port closed) and started again on the same port over the same files.

use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "glimpse-test-key";
pub const SECRET_KEY: &str = "glimpse-test-secret-0123456789";

pub struct S3Server {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Serves `root` (each directory a bucket; `bucket` is made) on `port` (0: any free one).
    pub fn start(root: &Path, bucket: &str, port: u16) -> Self {
        std::fs::create_dir_all(root.join(bucket)).expect("bucket directory");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = root.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("S3 runtime");
            runtime.block_on(async move {
                let fs = s3s_fs::FileSystem::new(&served).expect("s3s-fs root");
                let mut builder = S3ServiceBuilder::new(fs);
                builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                let service = builder.build();
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind S3 server");
                port_tx.send(listener.local_addr().expect("address").port()).expect("report port");
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let (socket, _) = tokio::select! {
                        accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                        _ = &mut stop_rx => break,
                    };
                    let connection = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
            });
            // Dropping the runtime cuts every connection, as a killed server would.
            drop(runtime);
        });
        let port = port_rx.recv_timeout(std::time::Duration::from_secs(10)).expect("S3 server started");
        Self { port, stop: Some(stop_tx), thread: Some(thread) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every object under `bucket`, as keys.
    pub fn objects(root: &Path, bucket: &str) -> Vec<String> {
        let base = root.join(bucket);
        let mut found = Vec::new();
        let mut dirs = vec![base.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "jpg") {
                    found.push(path.strip_prefix(&base).expect("below the bucket").to_string_lossy().into_owned());
                }
            }
        }
        found.sort();
        found
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

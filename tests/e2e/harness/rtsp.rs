//! A real gst-rtsp-server in this process on a free loopback port, serving a clip. Every client
//! gets its own media from the start of the clip (not shared), like a camera that restarts.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

pub struct RtspServer {
    pub port: u16,
    main_loop: glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RtspServer {
    /// Serves the H.264 MP4 file `clip` at `rtsp://127.0.0.1:{port}/{mount}`.
    pub fn serve_mp4(clip: &std::path::Path, mount: &str) -> Self {
        gst::init().expect("GStreamer initialises");
        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let launch = format!(
            "( filesrc location=\"{}\" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )",
            clip.display()
        );
        let mount = format!("/{mount}");
        let thread_loop = main_loop.clone();
        let thread = std::thread::spawn(move || {
            context
                .with_thread_default(|| {
                    let server = rtsp::RTSPServer::new();
                    server.set_address("127.0.0.1");
                    server.set_service("0");
                    let factory = rtsp::RTSPMediaFactory::new();
                    factory.set_launch(&launch);
                    factory.set_shared(false);
                    server.mount_points().expect("mount points").add_factory(&mount, factory);
                    let source = server.attach(Some(&context)).expect("RTSP server attaches");
                    port_tx.send(server.bound_port()).expect("report port");
                    thread_loop.run();
                    drop(source);
                })
                .expect("RTSP server context");
        });
        let port = port_rx.recv_timeout(std::time::Duration::from_secs(10)).expect("RTSP server started");
        Self { port: port as u16, main_loop, thread: Some(thread) }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

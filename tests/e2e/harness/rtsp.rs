//! A real gst-rtsp-server in this process on a loopback port, serving a clip. Every client gets
//! its own media from the start of the clip (not shared), like a camera that restarts. The
//! server can require a password, freeze its streams, and be killed and started again on the
//! same port.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

pub struct RtspServer {
    pub port: u16,
    server: rtsp::RTSPServer,
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    /// Every media served so far, so that a kill can stop their pipelines.
    medias: Arc<Mutex<Vec<rtsp::RTSPMedia>>>,
    /// The `valve` of every media served so far: closing them freezes the streams.
    gates: Arc<Mutex<Vec<gst::Element>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
pub struct Options {
    /// Port to listen on; 0 for any free one.
    pub port: u16,
    /// Require this user and password (HTTP basic).
    pub credentials: Option<(String, String)>,
}

impl RtspServer {
    /// Serves the H.264 MP4 file `clip` at `rtsp://127.0.0.1:{port}/{mount}`.
    pub fn serve_mp4(clip: &std::path::Path, mount: &str) -> Self {
        Self::start(clip, mount, Options::default())
    }

    pub fn start(clip: &std::path::Path, mount: &str, options: Options) -> Self {
        gst::init().expect("GStreamer initialises");
        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&options.port.to_string());
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&format!(
            "( filesrc location=\"{}\" ! qtdemux ! h264parse ! valve name=gate ! rtph264pay name=pay0 pt=96 config-interval=1 )",
            clip.display()
        ));
        factory.set_shared(false);
        let gates = Arc::new(Mutex::new(Vec::new()));
        let medias = Arc::new(Mutex::new(Vec::new()));
        let (seen_gates, seen_medias) = (gates.clone(), medias.clone());
        factory.connect_media_configure(move |_, media| {
            if let Some(gate) = media.element().downcast_ref::<gst::Bin>().and_then(|b| b.by_name("gate")) {
                seen_gates.lock().expect("gates").push(gate);
            }
            seen_medias.lock().expect("medias").push(media.clone());
        });
        if let Some((user, password)) = &options.credentials {
            let auth = rtsp::RTSPAuth::new();
            let token = rtsp::RTSPToken::builder().field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user").build();
            auth.add_basic(rtsp::RTSPAuth::make_basic(user, password).as_str(), &token);
            server.set_auth(Some(&auth));
            let role = gst::Structure::builder("user")
                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build();
            factory.add_role_from_structure(&role);
        }
        server.mount_points().expect("mount points").add_factory(&format!("/{mount}"), factory);
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (thread_loop, thread_server, thread_context) = (main_loop.clone(), server.clone(), context.clone());
        let thread = std::thread::spawn(move || {
            thread_context
                .with_thread_default(|| {
                    let source = thread_server.attach(Some(&thread_context)).expect("RTSP server attaches");
                    port_tx.send(thread_server.bound_port()).expect("report port");
                    thread_loop.run();
                    // Destroying the listening source closes the port, so a restart can bind it.
                    if let Some(listening) = thread_context.find_source_by_id(&source) {
                        listening.destroy();
                    }
                })
                .expect("RTSP server context");
        });
        let port = port_rx.recv_timeout(std::time::Duration::from_secs(10)).expect("RTSP server started");
        Self { port: port as u16, server, context, main_loop, medias, gates, thread: Some(thread) }
    }

    /// Stops every stream's data (sessions stay open): what a hung camera looks like.
    pub fn freeze(&self) {
        for gate in self.gates.lock().expect("gates").iter() {
            gate.set_property("drop", true);
        }
    }
}

impl Drop for RtspServer {
    /// Like killing the camera: every session's pipeline stops, every client's connection
    /// closes, and the port closes. All of it runs on the server's own context, before its loop
    /// ends: removing clients from another thread and quitting at once (as this harness did)
    /// left a session streaming after the "kill", so the daemon saw neither an error nor a stall.
    fn drop(&mut self) {
        let (server, medias, main_loop) = (self.server.clone(), self.medias.clone(), self.main_loop.clone());
        self.context.invoke(move || {
            for media in medias.lock().expect("medias").drain(..) {
                let _ = media.unprepare();
            }
            server.client_filter(Some(&mut |_, client| {
                client.close();
                rtsp::RTSPFilterResult::Remove
            }));
            main_loop.quit();
        });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

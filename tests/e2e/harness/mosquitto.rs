//! A real mosquitto broker on free loopback ports, stopped when dropped: plain, with a password
//! file, or with a TLS listener (certificates made by `openssl` for a test CA).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    /// The plain listener.
    pub port: u16,
    /// The TLS listener, when asked for.
    pub tls_port: Option<u16>,
    /// The test CA's certificate, when TLS is on.
    pub ca_file: Option<PathBuf>,
    child: Child,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
pub struct BrokerOptions {
    /// 0: any free port.
    pub port: u16,
    /// Require this user and password on every listener.
    pub credentials: Option<(String, String)>,
    /// Add a TLS listener with a fresh test CA.
    pub tls: bool,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_with(BrokerOptions::default())
    }

    pub fn start_on(port: u16) -> Self {
        Self::start_with(BrokerOptions { port, ..BrokerOptions::default() })
    }

    /// Starts a broker. Ports asked as 0 are chosen here; a port another process took between
    /// the choice and mosquitto's bind (mosquitto exits) is chosen again, and the broker counts
    /// as up only once its own log says it listens on every port.
    pub fn start_with(options: BrokerOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for mosquitto");
        let ca_file = options.tls.then(|| make_certificates(dir.path()));
        for _ in 0..5 {
            let port = if options.port == 0 { super::free_port() } else { options.port };
            let tls_port = options.tls.then(super::free_port);
            let path = write_config(dir.path(), &options, port, tls_port);
            let log = std::fs::File::create(dir.path().join("mosquitto.log")).expect("mosquitto log file");
            let mut child = Command::new(mosquitto_binary())
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("mosquitto must be installed (apt-get install mosquitto); run scripts/test.sh");
            let ports: Vec<u16> = std::iter::once(port).chain(tls_port).collect();
            if listening(&mut child, &dir.path().join("mosquitto.log"), &ports) {
                return Self { port, tls_port, ca_file, child, _dir: dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(options.port == 0, "mosquitto could not listen on the asked port {port}");
        }
        panic!("mosquitto could not find a free port in 5 tries");
    }
}

/// The broker's configuration for `options` on these ports; returns its path.
fn write_config(dir: &Path, options: &BrokerOptions, port: u16, tls_port: Option<u16>) -> PathBuf {
    let mut conf = format!("persistence false\nper_listener_settings false\nlog_dest stderr\nlistener {port} 127.0.0.1\n");
    if let Some(tls) = tls_port {
        let (ca, cert, key) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
        conf += &format!("listener {tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n", ca.display(), cert.display(), key.display());
    }
    match &options.credentials {
        Some((user, password)) => {
            let file = dir.join("passwd");
            let status =
                Command::new("mosquitto_passwd").arg("-b").arg("-c").arg(&file).arg(user).arg(password).status().expect("mosquitto_passwd");
            assert!(status.success());
            conf += &format!("allow_anonymous false\npassword_file {}\n", file.display());
        }
        None => conf += "allow_anonymous true\n",
    }
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, conf).expect("write mosquitto.conf");
    path
}

/// Waits until mosquitto's log says it listens on every one of `ports`; false if it exits first.
fn listening(child: &mut Child, log: &Path, ports: &[u16]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if ports.iter().all(|p| text.contains(&format!("listen socket on port {p}."))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A CA and a server certificate for 127.0.0.1 signed by it; returns the CA's path.
/// A test CA (`ca.pem`, returned) and a server certificate it signed for 127.0.0.1 and
/// localhost (`server.pem`, `server.key`), in `dir`.
pub fn make_certificates(dir: &Path) -> PathBuf {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl must be installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=glimpse test CA",
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("write san.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    // mosquitto started as root drops to its own user, which must be able to read these.
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).expect("list certificate dir").flatten() {
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644));
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    dir.join("ca.pem")
}

fn mosquitto_binary() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

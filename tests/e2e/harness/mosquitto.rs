//! A real mosquitto broker on free loopback ports, stopped when dropped: plain, with a password
//! file, or with a TLS listener (certificates made by `openssl` for a test CA).

use std::net::TcpStream;
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

    pub fn start_with(options: BrokerOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for mosquitto");
        let port = if options.port == 0 { super::free_port() } else { options.port };
        let mut conf = format!("persistence false\nper_listener_settings false\nlistener {port} 127.0.0.1\n");
        let mut tls_port = None;
        let mut ca_file = None;
        if options.tls {
            let tls = super::free_port();
            let ca = make_certificates(dir.path());
            conf += &format!(
                "listener {tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                ca.display(),
                dir.path().join("server.pem").display(),
                dir.path().join("server.key").display()
            );
            tls_port = Some(tls);
            ca_file = Some(ca);
        }
        match &options.credentials {
            Some((user, password)) => {
                let file = dir.path().join("passwd");
                let status = Command::new("mosquitto_passwd")
                    .arg("-b")
                    .arg("-c")
                    .arg(&file)
                    .arg(user)
                    .arg(password)
                    .status()
                    .expect("mosquitto_passwd");
                assert!(status.success());
                conf += &format!("allow_anonymous false\npassword_file {}\n", file.display());
            }
            None => conf += "allow_anonymous true\n",
        }
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf).expect("write mosquitto.conf");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto); run scripts/test.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, tls_port, ca_file, child, _dir: dir }
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it; returns the CA's path.
fn make_certificates(dir: &Path) -> PathBuf {
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

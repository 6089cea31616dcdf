//! A RabbitMQ node of the test's own, for what must not be done to the shared broker:
//! restarting it, or giving it a TLS listener that asks for client certificates.
//!
//! The node runs from the installed RabbitMQ (Debian's `rabbitmq-server` package) with its
//! own node name, ports, data folder and configuration, under the current user, and is
//! stopped and removed when dropped. Startup takes a few seconds, so only tests that need
//! one start one.
//!
//! May depend on: the installed RabbitMQ scripts, rcgen for throwaway certificates.

use std::{
    fs,
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::services::{unique, Rabbitmqctl};

/// Where Debian's package keeps the scripts that run a node as the calling user; the ones
/// on the PATH switch to the `rabbitmq` user, whose Erlang cookie we cannot read.
const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";
const STARTUP_LIMIT: Duration = Duration::from_secs(120);

/// A running RabbitMQ node of the test's own.
pub struct PrivateBroker {
    node: String,
    dir: tempfile::TempDir,
    /// The plain AMQP listener, on 127.0.0.1.
    pub port: u16,
    /// The TLS listener, when started with certificates.
    pub tls_port: Option<u16>,
    /// STOMP over TLS (RabbitMQ's STOMP plugin), when started with certificates.
    pub stomp_tls_port: Option<u16>,
    /// Erlang distribution, for `rabbitmqctl`.
    dist_port: u16,
    server: Option<Child>,
}

impl PrivateBroker {
    /// A node with a plain listener.
    pub fn start(what: &str) -> PrivateBroker {
        Self::start_with(what, None)
    }

    /// A node with a plain listener and, for AMQP and for STOMP, TLS ones that present
    /// `certificates`' server certificate and refuse clients without a certificate their CA
    /// signed.
    pub fn start_with(what: &str, certificates: Option<&Certificates>) -> PrivateBroker {
        assert!(
            Path::new(RABBITMQ_BIN).join("rabbitmq-server").exists(),
            "{RABBITMQ_BIN}/rabbitmq-server is missing: install the rabbitmq-server package \
             (scripts/test does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("golconde-rabbit-")
            .tempdir()
            .expect("a folder for the node");
        let port = free_port();
        let dist_port = free_port();
        let mut conf = format!(
            "listeners.tcp.1 = 127.0.0.1:{port}\n\
             # The tests publish before anything consumes; keep the broker from blocking\n\
             # publishers on a busy machine's disk or memory readings.\n\
             disk_free_limit.absolute = 1MB\n\
             vm_memory_high_watermark.relative = 0.9\n"
        );
        let tls_ports = certificates.map(|certs| {
            let (tls_port, stomp_tls_port) = (free_port(), free_port());
            conf.push_str(&format!(
                "stomp.listeners.tcp.1 = 127.0.0.1:{}\n\
                 stomp.listeners.ssl.1 = 127.0.0.1:{stomp_tls_port}\n\
                 listeners.ssl.1 = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = true\n",
                free_port(),
                certs.ca.display(),
                certs.server_cert.display(),
                certs.server_key.display(),
            ));
            (tls_port, stomp_tls_port)
        });
        let path = |name: &str| dir.path().join(name);
        fs::write(path("rabbitmq.conf"), conf).expect("rabbitmq.conf written");
        let plugins = if tls_ports.is_some() {
            "[rabbitmq_stomp].\n"
        } else {
            "[].\n"
        };
        fs::write(path("enabled_plugins"), plugins).expect("enabled_plugins written");
        fs::write(path("rabbitmq-env.conf"), "").expect("rabbitmq-env.conf written");
        // Its own Erlang cookie, under its own HOME: nodes started at the same moment would
        // otherwise race to create the user's one.
        let cookie = path(".erlang.cookie");
        fs::write(&cookie, unique("cookie")).expect("cookie written");
        fs::set_permissions(&cookie, fs::Permissions::from_mode(0o400)).expect("cookie mode");
        let mut broker = PrivateBroker {
            node: format!("{}@localhost", unique(what)),
            dir,
            port,
            dist_port,
            tls_port: tls_ports.map(|(amqp, _)| amqp),
            stomp_tls_port: tls_ports.map(|(_, stomp)| stomp),
            server: None,
        };
        broker.boot();
        broker
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `amqps://guest:guest@localhost:PORT/%2f`: the server certificate is for `localhost`.
    pub fn tls_url(&self) -> String {
        let port = self
            .tls_port
            .expect("the node was started with certificates");
        format!("amqps://guest:guest@localhost:{port}/%2f")
    }

    /// `localhost:PORT` of the STOMP TLS listener.
    pub fn stomp_tls_address(&self) -> String {
        let port = self
            .stomp_tls_port
            .expect("the node was started with certificates");
        format!("localhost:{port}")
    }

    /// `rabbitmqctl` aimed at this node.
    pub fn rabbitmqctl(&self) -> Rabbitmqctl {
        Rabbitmqctl {
            program: Path::new(RABBITMQ_BIN).join("rabbitmqctl"),
            args: vec!["-q".into(), "-n".into(), self.node.clone()],
            env: self.env(),
        }
    }

    fn ctl(&self) -> Command {
        self.rabbitmqctl().command()
    }

    /// Stops the node the way an operator's restart does (connections drop, the listener
    /// closes, durable queues and persistent messages stay on disk), then starts it again.
    pub fn restart(&mut self) {
        self.shut_down();
        self.boot();
    }

    fn env(&self) -> Vec<(String, String)> {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            ("RABBITMQ_NODENAME".to_string(), self.node.clone()),
            ("RABBITMQ_DIST_PORT".into(), self.dist_port.to_string()),
            // The system's rabbitmq-env.conf names the system's node; this one is empty.
            ("RABBITMQ_CONF_ENV_FILE".into(), path("rabbitmq-env.conf")),
            ("RABBITMQ_CONFIG_FILE".into(), path("rabbitmq.conf")),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".into(),
                path("enabled_plugins"),
            ),
            ("RABBITMQ_MNESIA_BASE".into(), path("mnesia")),
            ("RABBITMQ_LOG_BASE".into(), path("log")),
            (
                "RABBITMQ_ADVANCED_CONFIG_FILE".into(),
                path("advanced.config"),
            ),
            ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
            ("HOME".into(), self.dir.path().display().to_string()),
        ]
    }

    fn boot(&mut self) {
        let log = fs::File::create(self.dir.path().join("server.log")).expect("server log");
        let server = Command::new(Path::new(RABBITMQ_BIN).join("rabbitmq-server"))
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server starts");
        self.server = Some(server);
        let deadline = Instant::now() + STARTUP_LIMIT;
        let listening = |port: u16| {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
                .is_ok()
        };
        loop {
            if listening(self.port)
                && self.tls_port.is_none_or(listening)
                && self.stomp_tls_port.is_none_or(listening)
            {
                return;
            }
            let exited = self
                .server
                .as_mut()
                .and_then(|s| s.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "the test's RabbitMQ node {} did not start ({}); its output:\n{}",
                    self.node,
                    exited.map_or("timed out".to_string(), |s| s.to_string()),
                    self.server_log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn shut_down(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let stopped = self.ctl().arg("stop").output();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = server.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = server.kill();
                let _ = server.wait();
                panic!(
                    "the test's RabbitMQ node {} did not stop ({}); its output:\n{}",
                    self.node,
                    describe(&stopped),
                    self.server_log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The listener must be gone before anyone relies on the node being down.
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn server_log(&self) -> String {
        let mut text = fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        if let Ok(entries) = fs::read_dir(self.dir.path().join("log")) {
            for entry in entries.flatten() {
                text.push_str(&format!("\n--- {}\n", entry.path().display()));
                text.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = self.ctl().arg("stop").output();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !matches!(server.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

fn describe(output: &std::io::Result<Output>) -> String {
    match output {
        Ok(output) => format!(
            "rabbitmqctl stop: {} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => format!("rabbitmqctl stop: {e}"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Throwaway certificates: a CA, a server certificate for `localhost` and a client
/// certificate it signed, and a second CA that signed nothing of them.
pub struct Certificates {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
}

impl Certificates {
    pub fn generate() -> Certificates {
        let dir = tempfile::tempdir().expect("a folder for certificates");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            fs::write(&path, text).expect("certificate written");
            path
        };
        let (ca_params, ca_key, ca_pem) = authority("golconde test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let (server_pem, server_key) = leaf(&issuer, "localhost", true);
        let (client_pem, client_key) = leaf(&issuer, "golconde test client", false);
        let (_, _, other_pem) = authority("unrelated CA");
        Certificates {
            ca: write("ca.pem", ca_pem),
            server_cert: write("server.pem", server_pem),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client_pem),
            client_key: write("client.key", client_key),
            other_ca: write("other-ca.pem", other_pem),
            _dir: dir,
        }
    }
}

fn authority(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("a CA certificate").pem();
    (params, key, pem)
}

fn leaf(issuer: &Issuer<'_, KeyPair>, name: &str, server: bool) -> (String, String) {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    if server {
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().expect("a DNS name")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
    }
    let pem = params.signed_by(&key, issuer).expect("a certificate").pem();
    (pem, key.serialize_pem())
}

//! `sslcert`/`sslkey`: a server that authenticates clients by certificate only
//! (`hostssl ... cert`) lets in the session that presents one its CA signed, and refuses
//! one without, or with another CA's.
//!
//! The shared server must not be reconfigured, so the test starts a PostgreSQL server of
//! its own from the installed binaries, as the `postgres` user, on a free port, and
//! removes it at the end.

use std::{
    fs,
    net::TcpListener,
    os::unix::fs::{chown, PermissionsExt},
    path::PathBuf,
    process::Command,
};

use golconde_plugin_api::{sdk::parse_config, Database, ErrorKind, PluginError};
use golconde_postgres::{Config, Postgres};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// A PostgreSQL server of the test's own; stopped and removed when dropped.
struct Server {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Server {
    /// A server that accepts only TLS connections with a client certificate signed by the
    /// CA in `ca` (PEM), presenting `cert`/`key` as its own.
    fn start(ca: &str, cert: &str, key: &str) -> Server {
        let bin = postgres_bin();
        let dir = tempfile::Builder::new()
            .prefix("golconde-pg-")
            .tempdir()
            .expect("a folder for the server");
        let postgres = user_ids("postgres");
        chown(dir.path(), Some(postgres.0), Some(postgres.1)).expect("chown");
        let data = dir.path().join("data");
        as_postgres(
            Command::new(bin.join("initdb"))
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "-D",
                ])
                .arg(&data),
            "initdb",
        );
        for (name, text, mode) in [
            ("root.crt", ca, 0o644),
            ("server.crt", cert, 0o644),
            ("server.key", key, 0o600),
        ] {
            let path = data.join(name);
            fs::write(&path, text).expect("certificate written");
            chown(&path, Some(postgres.0), Some(postgres.1)).expect("chown");
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut conf = fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'root.crt'\nfsync = off\n",
            dir.path().display()
        ));
        fs::write(data.join("postgresql.conf"), conf).unwrap();
        fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 cert\n",
        )
        .unwrap();
        as_postgres(
            Command::new(bin.join("pg_ctl"))
                .args(["-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .arg("start"),
            "pg_ctl start",
        );
        Server { bin, dir, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
    }
}

/// The newest installed server's binaries (`/usr/lib/postgresql/N/bin`).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql: install postgresql (scripts/test does)")
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an installed PostgreSQL with initdb")
        .1
}

fn user_ids(name: &str) -> (u32, u32) {
    let output = Command::new("id").args(["-u", name]).output().unwrap();
    let uid = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    let output = Command::new("id").args(["-g", name]).output().unwrap();
    let gid = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    (uid, gid)
}

/// Runs `command` as the `postgres` user (initdb refuses root); fails the test with its
/// output if it fails.
fn as_postgres(command: &mut Command, what: &str) {
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .current_dir("/")
        .output()
        .expect("runuser runs");
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Throwaway certificates in PEM: the CA; certificates it signed, with their keys, for the
/// server, for the `postgres` user and for another user; and a client certificate
/// another CA signed.
struct Certificates {
    dir: tempfile::TempDir,
    ca: String,
    server: (String, String),
}

impl Certificates {
    fn generate() -> Certificates {
        let dir = tempfile::tempdir().unwrap();
        let (ca_params, ca_key, ca) = authority("golconde test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let server = leaf(&issuer, "localhost", true);
        let client = leaf(&issuer, "postgres", false);
        let someone_else = leaf(&issuer, "someone-else", false);
        let (other_params, other_key, _) = authority("unrelated CA");
        let stranger = leaf(&Issuer::new(other_params, other_key), "postgres", false);
        for (name, text) in [
            ("ca.pem", &ca),
            ("client.pem", &client.0),
            ("client.key", &client.1),
            ("stranger.pem", &stranger.0),
            ("stranger.key", &stranger.1),
            ("someone-else.pem", &someone_else.0),
            ("someone-else.key", &someone_else.1),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        Certificates { dir, ca, server }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn authority(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(issuer: &Issuer<'_, KeyPair>, name: &str, server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    if server {
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
    }
    let pem = params.signed_by(&key, issuer).unwrap().pem();
    (pem, key.serialize_pem())
}

/// Opens a session with `dsn` and asks the server who it is talking to.
fn connect(dsn: &str) -> Result<i32, PluginError> {
    let plugin = Postgres::from_config(parse_config::<Config>(
        &serde_json::json!({ "dsn": dsn }).to_string(),
    )?)?;
    plugin.connect()?.backend_pid()
}

#[test]
fn a_client_certificate_opens_a_server_that_asks_for_one() {
    let certs = Certificates::generate();
    let server = Server::start(&certs.ca, &certs.server.0, &certs.server.1);
    let base = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        server.port,
        certs.path("ca.pem")
    );
    let pid = connect(&format!(
        "{base} sslcert={} sslkey={}",
        certs.path("client.pem"),
        certs.path("client.key")
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(pid > 0);

    let refused = |dsn: String| {
        let error = connect(&dsn).expect_err("connected without a good client certificate");
        assert_eq!(error.kind, ErrorKind::Transient, "{error}");
        error.message.to_string()
    };
    let error = refused(base.clone());
    assert!(
        error.contains("give one with `sslcert` and `sslkey`"),
        "{error}"
    );
    let error = refused(format!(
        "{base} sslcert={} sslkey={}",
        certs.path("stranger.pem"),
        certs.path("stranger.key")
    ));
    assert!(
        error.contains("does not trust the client certificate"),
        "{error}"
    );
    let error = refused(format!(
        "{base} sslcert={} sslkey={}",
        certs.path("someone-else.pem"),
        certs.path("someone-else.key")
    ));
    assert!(
        error.contains("common name (CN) must be the user name"),
        "{error}"
    );
}

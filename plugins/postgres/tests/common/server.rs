//! A PostgreSQL server of the test's own, for what the shared server must not be made to
//! do (demand client certificates, refuse writes): started from the installed binaries as
//! the `postgres` user, on a free port of 127.0.0.1, and stopped and removed when dropped.

use std::{
    fs,
    net::TcpListener,
    os::unix::fs::{chown, PermissionsExt},
    path::PathBuf,
    process::Command,
};

pub struct Server {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Server {
    /// A server with `conf` added to its `postgresql.conf`, `hba` as its `pg_hba.conf`,
    /// and `files` (name, contents, mode) in its data folder.
    pub fn start(conf: &str, hba: &str, files: &[(&str, &str, u32)]) -> Server {
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
        for (name, text, mode) in files {
            let path = data.join(name);
            fs::write(&path, text).expect("file written");
            chown(&path, Some(postgres.0), Some(postgres.1)).expect("chown");
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut text = fs::read_to_string(data.join("postgresql.conf")).unwrap();
        text.push_str(&format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\n{conf}\n",
            dir.path().display()
        ));
        fs::write(data.join("postgresql.conf"), text).unwrap();
        fs::write(data.join("pg_hba.conf"), hba).unwrap();
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
    let id = |flag: &str| -> u32 {
        let output = Command::new("id").args([flag, name]).output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
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

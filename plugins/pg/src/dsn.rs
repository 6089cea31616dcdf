//! A PostgreSQL DSN read as libpq reads it, with its TLS keys taken out (see [`crate::tls`])
//! and its hosts split one by one.
//!
//! A DSN may name several hosts (`host=a,b port=5432,5433`, `postgres://a:5432,b:5433/db`),
//! as libpq allows, for a primary and its standbys. They are split here into one set of
//! connection options per host ([`Candidate`]), so that connecting can give each host its
//! own timeout and report each one's failure; tokio-postgres, given them all at once,
//! spends one timeout on the whole list and reports only the last host's error.

use std::{str::FromStr, time::Duration};

use tokio_postgres::config::{Host, LoadBalanceHosts};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls;

/// One host of the DSN, with everything else the DSN says.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub connect: tokio_postgres::Config,
    /// `host:port`, for messages.
    pub label: String,
}

/// How connections are encrypted.
#[derive(Clone)]
pub struct Tls {
    pub connector: MakeRustlsConnect,
    pub options: tls::Options,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.options.fmt(f)
    }
}

/// Where to connect and how: a DSN, validated.
#[derive(Debug, Clone)]
pub struct Target {
    /// The DSN as tokio-postgres reads it, all hosts together.
    pub connect: tokio_postgres::Config,
    /// The same, host by host, in the order the DSN lists them; connecting tries them in
    /// turn (shuffled with `load_balance_hosts=random`).
    pub candidates: Vec<Candidate>,
    pub tls: Tls,
    /// The DSN without its password, for messages.
    pub target: String,
    /// What each host is given to connect.
    pub connect_timeout: Duration,
}

impl Target {
    /// Reads `dsn`. The error names the key at fault (`dsn`, or an option of it) and never
    /// holds a piece of the password. Connections get `application_name=golconde` unless
    /// the DSN names one.
    pub fn parse(dsn: &str, connect_timeout: Duration) -> Result<Target, String> {
        let (plain, tls_options) = tls::split_dsn(dsn).map_err(|e| format!("`dsn`: {e}"))?;
        let mut connect = tokio_postgres::Config::from_str(&plain).map_err(|e| {
            // The parser's messages name an option, never a value; but an option it does
            // not know may be a piece of a password with a space or an `&` in it.
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            let reason = format!("{e}{cause}");
            if reason.contains("unknown option") && tls::may_hold_password(dsn) {
                return "`dsn` names an option PostgreSQL does not know (not repeated here: it \
                        may be part of a password; quote a value with spaces, password='a b', \
                        and %-encode `&`, `@` and spaces in a URL)"
                    .to_string();
            }
            format!("`dsn` cannot be parsed: {reason}")
        })?;
        if connect.get_hosts().is_empty() {
            return Err(
                "`dsn` names no host; add `host=...` (or use postgres://user@host/db)".into(),
            );
        }
        check_host_counts(&connect)?;
        connect.ssl_mode(tls_options.mode.ssl_mode());
        let tls = Tls {
            connector: tls::connector(&tls_options).map_err(|e| format!("`dsn`: {e}"))?,
            options: tls_options,
        };
        connect.connect_timeout(connect_timeout);
        if connect.get_application_name().is_none() {
            connect.application_name("golconde");
        }
        let candidates = (0..connect.get_hosts().len())
            .map(|i| Candidate {
                connect: one_host(&connect, i),
                label: label(&connect, i),
            })
            .collect();
        Ok(Target {
            target: describe(&connect),
            candidates,
            connect,
            tls,
            connect_timeout,
        })
    }

    /// The hosts in the order to try them now: as listed, or shuffled with
    /// `load_balance_hosts=random`, as libpq does.
    pub fn candidates(&self) -> Vec<&Candidate> {
        let mut order: Vec<&Candidate> = self.candidates.iter().collect();
        if self.connect.get_load_balance_hosts() == LoadBalanceHosts::Random {
            fastrand::shuffle(&mut order);
        }
        order
    }
}

/// The ports and `hostaddr`s must go with the hosts one to one (a single port serves
/// all); tokio-postgres would only find out on every connection attempt.
fn check_host_counts(config: &tokio_postgres::Config) -> Result<(), String> {
    let hosts = config.get_hosts().len();
    let ports = config.get_ports().len();
    if ports > 1 && ports != hosts {
        return Err(format!(
            "`dsn` names {hosts} hosts and {ports} ports; give one port for all hosts, or one \
             per host in the same order (port=5432,5433)"
        ));
    }
    let addresses = config.get_hostaddrs().len();
    if addresses > 0 && addresses != hosts {
        return Err(format!(
            "`dsn` names {hosts} hosts and {addresses} hostaddrs; give one hostaddr per host, \
             in the same order"
        ));
    }
    Ok(())
}

/// The options of `all` for its `i`th host alone. tokio-postgres has no way to drop
/// hosts from a configuration, so every other option is copied over;
/// `tests::one_host_keeps_every_other_option` fails if one is missed.
pub fn one_host(all: &tokio_postgres::Config, i: usize) -> tokio_postgres::Config {
    let mut one = tokio_postgres::Config::new();
    if let Some(user) = all.get_user() {
        one.user(user);
    }
    if let Some(password) = all.get_password() {
        one.password(password);
    }
    if let Some(dbname) = all.get_dbname() {
        one.dbname(dbname);
    }
    if let Some(options) = all.get_options() {
        one.options(options);
    }
    if let Some(name) = all.get_application_name() {
        one.application_name(name);
    }
    if let Some(timeout) = all.get_connect_timeout() {
        one.connect_timeout(*timeout);
    }
    if let Some(timeout) = all.get_tcp_user_timeout() {
        one.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = all.get_keepalives_interval() {
        one.keepalives_interval(interval);
    }
    if let Some(retries) = all.get_keepalives_retries() {
        one.keepalives_retries(retries);
    }
    one.ssl_mode(all.get_ssl_mode())
        .ssl_negotiation(all.get_ssl_negotiation())
        .keepalives(all.get_keepalives())
        .keepalives_idle(all.get_keepalives_idle())
        .target_session_attrs(all.get_target_session_attrs())
        .channel_binding(all.get_channel_binding())
        .load_balance_hosts(all.get_load_balance_hosts());
    match &all.get_hosts()[i] {
        Host::Tcp(name) => one.host(name),
        Host::Unix(path) => one.host_path(path),
    };
    if let Some(address) = all.get_hostaddrs().get(i) {
        one.hostaddr(*address);
    }
    if let Some(port) = port(all, i) {
        one.port(port);
    }
    one
}

/// The port of the `i`th host, if the DSN gives one.
fn port(config: &tokio_postgres::Config, i: usize) -> Option<u16> {
    let ports = config.get_ports();
    ports.get(i).or(ports.first()).copied()
}

fn host_name(host: &Host) -> String {
    match host {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    }
}

/// `host:port` of the `i`th host (the port PostgreSQL uses if the DSN gives none).
fn label(config: &tokio_postgres::Config, i: usize) -> String {
    let name = host_name(&config.get_hosts()[i]);
    format!("{name}:{}", port(config, i).unwrap_or(5432))
}

/// `user@host:port/dbname`, never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = host_name(host);
            match port(config, i) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `one_host` copies every option but the hosts: with one host, it gives back the
    /// configuration it was given, whatever the options.
    #[test]
    fn one_host_keeps_every_other_option() {
        let all: tokio_postgres::Config = "host=db hostaddr=10.0.0.1 port=6543 user=u \
             password=p dbname=d options='-c x=y' application_name=a sslmode=require \
             sslnegotiation=direct connect_timeout=3 tcp_user_timeout=4 keepalives=0 \
             keepalives_idle=5 keepalives_interval=6 keepalives_retries=7 \
             target_session_attrs=read-write channel_binding=require load_balance_hosts=random"
            .parse()
            .unwrap();
        assert!(one_host(&all, 0) == all, "{:?}\n{all:?}", one_host(&all, 0));
        let plain: tokio_postgres::Config = "host=/run/postgresql".parse().unwrap();
        assert!(one_host(&plain, 0) == plain, "{plain:?}");
    }
}

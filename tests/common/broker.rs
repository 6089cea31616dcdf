//! RabbitMQ nodes of the test's own, for what must not be done to the shared broker:
//! restarting it, giving it a TLS listener that asks for client certificates, or losing a
//! node of a cluster.
//!
//! A node runs from the installed RabbitMQ (Debian's `rabbitmq-server` package) with its
//! own node name, ports, data folder and configuration, under the current user, and is
//! stopped and removed when dropped. [`PrivateBroker`] is one node; [`Cluster`] is several
//! joined into one cluster, whose nodes a test stops and starts; [`Client`] and [`Producer`]
//! declare and publish what the `amqp` plugin does not (queue arguments, exchanges, routing
//! keys). Startup takes seconds, so only tests that need one start one.
//!
//! May depend on: the installed RabbitMQ scripts, lapin for the test's own AMQP client,
//! rcgen for throwaway certificates.

use std::{
    collections::BTreeSet,
    fs,
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use lapin::types::{AMQPValue, FieldTable};
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
        let plugins: &[&str] = match certificates {
            Some(_) => &["rabbitmq_stomp"],
            None => &[],
        };
        let mut attempt = 1;
        loop {
            let mut broker = Self::prepare(what, certificates, plugins, &unique("cookie"));
            broker.spawn();
            match broker.started() {
                Ok(()) => return broker,
                // Another process took a port between its choice and the node's bind.
                Err(why) if why.contains("eaddrinuse") && attempt < 3 => {
                    eprintln!("a port of the test's RabbitMQ node was taken; starting it again");
                    attempt += 1;
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// Writes the node's files without starting it: its own folder, ports and node name,
    /// the `plugins` it enables, and its Erlang `cookie` (nodes that are to cluster share
    /// one).
    fn prepare(
        what: &str,
        certificates: Option<&Certificates>,
        plugins: &[&str],
        cookie: &str,
    ) -> PrivateBroker {
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
        fs::write(
            path("enabled_plugins"),
            format!("[{}].\n", plugins.join(",")),
        )
        .expect("enabled_plugins written");
        fs::write(path("rabbitmq-env.conf"), "").expect("rabbitmq-env.conf written");
        // A cookie under the node's own HOME: nodes started at the same moment would
        // otherwise race to create the user's one.
        let cookie_file = path(".erlang.cookie");
        fs::write(&cookie_file, cookie).expect("cookie written");
        fs::set_permissions(&cookie_file, fs::Permissions::from_mode(0o400)).expect("cookie mode");
        PrivateBroker {
            node: format!("{}@localhost", unique(what)),
            dir,
            port,
            dist_port,
            tls_port: tls_ports.map(|(amqp, _)| amqp),
            stomp_tls_port: tls_ports.map(|(_, stomp)| stomp),
            server: None,
        }
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
        self.spawn();
        self.wait_up();
    }

    /// Starts the server process and returns at once: [`Cluster`] boots its nodes side by
    /// side, which on a small machine takes little longer than booting one.
    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        let server = Command::new(Path::new(RABBITMQ_BIN).join("rabbitmq-server"))
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server starts");
        self.server = Some(server);
    }

    /// Waits until every listener of the node accepts connections.
    fn wait_up(&mut self) {
        if let Err(why) = self.started() {
            panic!("{why}");
        }
    }

    /// Waits until every listener of the node accepts connections, or says why not.
    fn started(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if self.listening() {
                return Ok(());
            }
            let exited = self
                .server
                .as_mut()
                .and_then(|s| s.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                return Err(format!(
                    "the test's RabbitMQ node {} did not start ({}); its output:\n{}",
                    self.node,
                    exited.map_or("timed out".to_string(), |s| s.to_string()),
                    self.server_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn listening(&self) -> bool {
        let open = |port: u16| {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
                .is_ok()
        };
        open(self.port) && self.tls_port.is_none_or(open) && self.stomp_tls_port.is_none_or(open)
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

    /// Joins the stopped app of this node to `seed`'s cluster and starts it again.
    fn join(&self, seed: &PrivateBroker) -> Result<(), String> {
        self.ctl_result(&["join_cluster", &seed.node])?;
        self.ctl_result(&["start_app"])
    }

    /// Runs `rabbitmqctl ARGS` on this node; its output if it fails.
    fn ctl_result(&self, args: &[&str]) -> Result<(), String> {
        let output = self.ctl().args(args).output().expect("rabbitmqctl runs");
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "rabbitmqctl -n {} {}: {}{}",
            self.node,
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    /// Runs `rabbitmqctl ARGS` on this node; fails the test with its output if it fails.
    fn ctl_ok(&self, args: &[&str]) {
        let output = self.ctl().args(args).output().expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl -n {} {}: {}{}\nthe node's log:\n{}",
            self.node,
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server_log()
        );
    }

    /// Kills the node's VM (the child of `rabbitmq-server`, which runs it in the background)
    /// and the script.
    fn kill(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        for vm in crate::children_of(server.id()) {
            // SAFETY: kill(2) on a child of our own child.
            unsafe { libc::kill(vm as i32, libc::SIGKILL) };
        }
        let _ = server.kill();
        let _ = server.wait();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
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

/// A RabbitMQ cluster of the test's own: `size` nodes as [`PrivateBroker`] runs one (own
/// node names, ports and data folders), sharing one Erlang cookie, with the
/// `rabbitmq_consistent_hash_exchange` plugin enabled on every node. Nodes can be stopped
/// and started again while it runs; all of them are stopped and removed when it is dropped.
///
/// The nodes boot side by side, then every node but the first leaves its fresh state and
/// joins the first (`rabbitmqctl stop_app`, `join_cluster`, `start_app`), one at a time.
/// Three nodes take 12 to 20 seconds on an idle two-core machine, 20 to 35 while another
/// cluster boots beside them.
pub struct Cluster {
    nodes: Vec<PrivateBroker>,
    /// How long booting and joining took.
    pub started_in: Duration,
}

impl Cluster {
    pub fn start(what: &str, size: usize) -> Cluster {
        assert!(size >= 1, "a cluster has at least one node");
        let started = Instant::now();
        let cookie = unique("cookie");
        let mut nodes: Vec<PrivateBroker> = (0..size)
            .map(|n| {
                PrivateBroker::prepare(
                    &format!("{what}{n}"),
                    None,
                    &["rabbitmq_consistent_hash_exchange"],
                    &cookie,
                )
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_up();
        }
        let (first, others) = nodes.split_first_mut().expect("one node at least");
        let seed: &PrivateBroker = first;
        // Joins that race each other on the seed sometimes leave a node whose mnesia cannot
        // start, so nodes join one at a time. A node that still fails to join is killed,
        // forgotten by the seed, wiped and booted afresh before it joins again: `reset`
        // cannot repair it, as it needs the very mnesia that refuses to start.
        let one_at_a_time = Mutex::new(());
        std::thread::scope(|scope| {
            for node in others {
                let one_at_a_time = &one_at_a_time;
                scope.spawn(move || {
                    node.ctl_ok(&["stop_app"]);
                    let _alone = one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
                    let mut failure = node.join(seed).err();
                    for _ in 0..2 {
                        let Some(why) = failure.take() else { break };
                        eprintln!(
                            "node {} could not join, starting it afresh: {why}",
                            node.node
                        );
                        node.kill();
                        let _ = seed.ctl_result(&["forget_cluster_node", &node.node]);
                        let _ = fs::remove_dir_all(node.dir.path().join("mnesia"));
                        node.boot();
                        node.ctl_ok(&["stop_app"]);
                        failure = node.join(seed).err();
                    }
                    if let Some(why) = failure {
                        panic!(
                            "node {} could not join {}: {why}\nits log:\n{}",
                            node.node,
                            seed.node,
                            node.server_log()
                        );
                    }
                    node.wait_up();
                });
            }
        });
        let cluster = Cluster {
            nodes,
            started_in: started.elapsed(),
        };
        let running = cluster.running_nodes();
        assert_eq!(
            running.len(),
            size,
            "the cluster formed with {running:?} running"
        );
        cluster
    }

    /// How many nodes the cluster has, running or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The AMQP URL of node `n` (0-based).
    pub fn url(&self, n: usize) -> String {
        self.nodes[n].url()
    }

    /// The AMQP URL of every node, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateBroker::url).collect()
    }

    /// Node `n`'s Erlang name, `NAME@localhost`.
    pub fn node_name(&self, n: usize) -> &str {
        &self.nodes[n].node
    }

    /// Which node has the Erlang name `name`.
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.node == name)
    }

    /// Which node listens for AMQP on `port`.
    pub fn node_on_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|node| node.port == port)
    }

    pub fn is_running(&self, n: usize) -> bool {
        self.nodes[n].server.is_some()
    }

    /// Stops node `n` as an operator would (`rabbitmqctl stop`): its clients' connections
    /// are closed, and the quorum queues it led elect a leader among the other replicas.
    /// Returns once its AMQP listener is closed.
    pub fn stop_node(&mut self, n: usize) {
        self.nodes[n].shut_down();
    }

    /// Kills node `n`'s Erlang VM with SIGKILL, as a crash or a power cut would: nothing is
    /// closed in order, the other nodes see it gone when its distribution connections drop.
    /// Returns once its AMQP listener is closed.
    pub fn kill_node(&mut self, n: usize) {
        self.nodes[n].kill();
    }

    /// Starts node `n` again; it rejoins the cluster from its data folder. Returns once it
    /// accepts AMQP connections.
    pub fn start_node(&mut self, n: usize) {
        self.nodes[n].boot();
    }

    /// `rabbitmqctl` aimed at the first running node: the cluster answers as a whole.
    pub fn rabbitmqctl(&self) -> Rabbitmqctl {
        self.nodes
            .iter()
            .find(|node| node.server.is_some())
            .expect("a running node")
            .rabbitmqctl()
    }

    /// An AMQP client of the test's own on the first running node.
    pub fn client(&self) -> Client {
        let node = (0..self.len())
            .find(|&n| self.is_running(n))
            .expect("a running node");
        Client::connect(&self.url(node), "golconde e2e cluster admin")
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.node_name(node)))
    }

    /// Declares a durable quorum queue with a replica on every node
    /// (`x-quorum-initial-group-size`), and `arguments` besides (`x-single-active-consumer`,
    /// ...). Its first leader is the node the declaration went through, the first running
    /// one (RabbitMQ's `client-local` leader locator).
    pub fn declare_quorum_queue(&self, queue: &str, arguments: &[(&str, AMQPValue)]) {
        let mut table = FieldTable::default();
        table.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        table.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongLongInt(self.len() as i64),
        );
        for (name, value) in arguments {
            table.insert((*name).into(), value.clone());
        }
        self.client()
            .declare_queue(queue, table)
            .unwrap_or_else(|e| panic!("declaring quorum queue `{queue}`: {e}"));
    }

    /// Declares a durable `x-consistent-hash` exchange and binds each of `queues` to it with
    /// weight 1: a message goes to the queue its routing key hashes to, always the same one.
    pub fn declare_consistent_hash_exchange(&self, exchange: &str, queues: &[String]) {
        let client = self.client();
        client
            .declare_exchange(exchange, "x-consistent-hash")
            .unwrap_or_else(|e| panic!("declaring exchange `{exchange}`: {e}"));
        for queue in queues {
            client
                .bind(queue, exchange, "1")
                .unwrap_or_else(|e| panic!("binding `{queue}` to `{exchange}`: {e}"));
        }
    }

    /// The node leading quorum queue `queue`, per the cluster; `None` while it has none (an
    /// election in progress) or when the queue does not exist.
    pub fn leader(&self, queue: &str) -> Option<usize> {
        self.list(&["list_queues", "name", "leader"])
            .iter()
            .find(|q| q["name"] == queue)
            .and_then(|q| q["leader"].as_str())
            .and_then(|leader| self.node_named(leader))
    }

    /// The nodes holding a replica of quorum queue `queue`.
    pub fn members(&self, queue: &str) -> Vec<usize> {
        self.replicas(queue, "members")
    }

    /// The nodes whose replica of quorum queue `queue` is running.
    pub fn online(&self, queue: &str) -> Vec<usize> {
        self.replicas(queue, "online")
    }

    /// The nodes `list_queues` names in column `column` for `queue`.
    fn replicas(&self, queue: &str, column: &str) -> Vec<usize> {
        let mut members: Vec<usize> = self
            .list(&["list_queues", "name", column])
            .iter()
            .find(|q| q["name"] == queue)
            .and_then(|q| q[column].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|name| self.node_named(name.as_str()?))
            .collect();
        members.sort_unstable();
        members
    }

    /// How many messages `queue` holds, ready and unacknowledged.
    pub fn depth(&self, queue: &str) -> (u64, u64) {
        self.list(&[
            "list_queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .iter()
        .find(|q| q["name"] == queue)
        .map(|q| {
            let count = |field: &str| q[field].as_u64().unwrap_or(0);
            (count("messages_ready"), count("messages_unacknowledged"))
        })
        .unwrap_or((0, 0))
    }

    /// The nodes on which clients hold connections whose client-provided name contains
    /// `name`: one entry per connection, in no particular order.
    pub fn nodes_with_connections(&self, name: &str) -> Vec<usize> {
        self.list(&["list_connections", "port", "client_properties"])
            .iter()
            .filter(|c| c["client_properties"].to_string().contains(name))
            .filter_map(|c| self.node_on_port(u16::try_from(c["port"].as_u64()?).ok()?))
            .collect()
    }

    /// Closes every connection whose client-provided name contains `name`, as a network
    /// failure would end it; returns how many there were.
    pub fn close_connections(&self, name: &str) -> usize {
        // As text: the JSON formatter writes pids as Elixir terms, which `close_connection`
        // does not read.
        let output = self
            .rabbitmqctl()
            .command()
            .args([
                "list_connections",
                "--no-table-headers",
                "pid",
                "client_properties",
            ])
            .output()
            .expect("rabbitmqctl runs");
        let mut closed = 0;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Some(pid) = line
                .split_whitespace()
                .next()
                .filter(|_| line.contains(name))
            else {
                continue;
            };
            let status = self
                .rabbitmqctl()
                .command()
                .args(["close_connection", pid, "golconde end-to-end test"])
                .status()
                .expect("rabbitmqctl runs");
            closed += usize::from(status.success());
        }
        closed
    }

    /// The names of the running nodes, per the cluster.
    pub fn running_nodes(&self) -> Vec<String> {
        let status = self.query(&["cluster_status"]);
        status["running_nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| Some(n.as_str()?.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs a `rabbitmqctl list_*` command: one object per row.
    fn list(&self, args: &[&str]) -> Vec<serde_json::Value> {
        match self.query(args) {
            serde_json::Value::Array(rows) => rows,
            other => panic!("rabbitmqctl {}: not a list: {other}", args.join(" ")),
        }
    }

    /// Runs `rabbitmqctl ARGS --formatter json` on a running node.
    fn query(&self, args: &[&str]) -> serde_json::Value {
        let output = self
            .rabbitmqctl()
            .command()
            .args(args)
            .args(["--formatter", "json"])
            .output()
            .expect("rabbitmqctl runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "rabbitmqctl {}: {text}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("rabbitmqctl {}: {e}: {text}", args.join(" ")))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Side by side: each node takes seconds to stop.
        std::thread::scope(|scope| {
            for node in self.nodes.drain(..) {
                scope.spawn(move || drop(node));
            }
        });
    }
}

/// An AMQP connection of the test's own to one node (lapin, with publisher confirms), for
/// what the `amqp` plugin does not do: declaring queues with arguments chosen here,
/// exchanges and bindings, and publishing to an exchange with a routing key.
pub struct Client {
    runtime: tokio::runtime::Runtime,
    connection: lapin::Connection,
    channel: lapin::Channel,
}

impl Client {
    /// Connects to `url`, naming the connection `name` for `rabbitmqctl list_connections`.
    pub fn connect(url: &str, name: &str) -> Result<Client, lapin::Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let handle = runtime.handle().clone();
        let (connection, channel) = runtime.block_on(async {
            let connection = lapin::Connection::connect_with_runtime(
                url,
                lapin::ConnectionProperties::default().with_connection_name(name.into()),
                async_rs::Runtime::tokio_with_handle(handle),
            )
            .await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>((connection, channel))
        })?;
        Ok(Client {
            runtime,
            connection,
            channel,
        })
    }

    pub fn declare_queue(&self, queue: &str, arguments: FieldTable) -> Result<(), lapin::Error> {
        self.runtime
            .block_on(self.channel.queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            ))
            .map(drop)
    }

    /// Declares a durable exchange of `kind` (`direct`, `x-consistent-hash`, ...).
    pub fn declare_exchange(&self, exchange: &str, kind: &str) -> Result<(), lapin::Error> {
        let kind = match kind {
            "direct" => lapin::ExchangeKind::Direct,
            "fanout" => lapin::ExchangeKind::Fanout,
            "topic" => lapin::ExchangeKind::Topic,
            "headers" => lapin::ExchangeKind::Headers,
            other => lapin::ExchangeKind::Custom(other.to_string()),
        };
        self.runtime.block_on(self.channel.exchange_declare(
            exchange.into(),
            kind,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ))
    }

    pub fn bind(&self, queue: &str, exchange: &str, key: &str) -> Result<(), lapin::Error> {
        self.runtime.block_on(self.channel.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        ))
    }

    /// Publishes each (routing key, body) to `exchange` (`""`: the default exchange, where
    /// the routing key is a queue's name) as a persistent, mandatory message, pipelined, and
    /// returns once the broker confirmed them all. A message the broker could not route or
    /// refused is an error, as is a lost connection or confirmations that do not come
    /// within [`CONFIRM_LIMIT`] (a node killed under a connection may leave them pending):
    /// then some of the messages may have been taken and others not.
    pub fn publish(&self, exchange: &str, messages: &[(String, String)]) -> Result<(), String> {
        use lapin::Confirmation;
        let publishing = async {
            let mut confirms = Vec::with_capacity(messages.len());
            for (key, body) in messages {
                let confirm = self
                    .channel
                    .basic_publish(
                        exchange.into(),
                        key.as_str().into(),
                        lapin::options::BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        body.as_bytes(),
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .map_err(|e| format!("publishing to `{exchange}` with key `{key}`: {e}"))?;
                confirms.push((key, confirm));
            }
            for (key, confirm) in confirms {
                match confirm
                    .await
                    .map_err(|e| format!("confirming `{key}` on `{exchange}`: {e}"))?
                {
                    Confirmation::Ack(None) => {}
                    Confirmation::Ack(Some(_)) => {
                        return Err(format!("`{exchange}` routed `{key}` to no queue"))
                    }
                    other => return Err(format!("`{exchange}` refused `{key}`: {other:?}")),
                }
            }
            Ok(())
        };
        self.runtime.block_on(async {
            tokio::time::timeout(CONFIRM_LIMIT, publishing)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no confirmation of {} messages to `{exchange}` within {CONFIRM_LIMIT:?}",
                        messages.len()
                    ))
                })
        })
    }
}

/// How long a test's own lapin client waits for the broker's confirmations, or for its
/// connection to close: lapin has been seen to leave both pending for ever once its
/// connection was lost (a node stopped or killed under it, a message it sent dropping it).
pub const CONFIRM_LIMIT: Duration = Duration::from_secs(10);

impl Drop for Client {
    fn drop(&mut self) {
        // Bounded: the client may be dropped because its node is gone.
        let closing = self.connection.close(200, "done".into());
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(CONFIRM_LIMIT, closing).await });
    }
}

/// Publishes through whichever node of a cluster answers, moving on to the next one when
/// its connection is lost.
pub struct Producer {
    urls: Vec<String>,
    name: String,
    next: usize,
    client: Option<Client>,
}

impl Producer {
    /// Connects on first use; `name` names its connections.
    pub fn new(urls: Vec<String>, name: &str) -> Producer {
        Producer {
            urls,
            name: name.to_string(),
            next: 0,
            client: None,
        }
    }

    /// Publishes `messages` as [`Client::publish`] does, through the next node that answers
    /// when one fails, trying for up to `limit`. After a failure the whole slice goes again,
    /// so a message may be taken twice, but never after a later message of its slice: with
    /// at most one message per row in a slice, no row ever goes back to an older version on
    /// the queue.
    pub fn publish(&mut self, exchange: &str, messages: &[(String, String)], limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut failures = Vec::new();
        loop {
            if self.client.is_none() {
                let url = &self.urls[self.next % self.urls.len()];
                self.next += 1;
                match Client::connect(url, &self.name) {
                    Ok(client) => self.client = Some(client),
                    Err(e) => failures.push(format!("{url}: {e}")),
                }
            }
            if let Some(client) = &self.client {
                match client.publish(exchange, messages) {
                    Ok(()) => return,
                    Err(e) => {
                        failures.push(e);
                        self.client = None;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no node took the messages within {limit:?}: {failures:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
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

/// A port free now for a server of a test's own, below Linux's ephemeral range (32768 and
/// up by default): a port the kernel hands out picks an outgoing connection's port from
/// that range too, and one could take it before the server binds it. A port is handed out
/// once per test binary: servers that boot side by side (a cluster's nodes, two clusters)
/// bind theirs only seconds after the choice, so the same free port chosen twice would
/// fail the later one.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..200 {
        let port = fastrand::u16(20_000..32_000);
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
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

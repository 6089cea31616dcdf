//! The dashboard at `GET /`, in a real headless Chromium, against a daemon moving real
//! messages from RabbitMQ into PostgreSQL: the page signs in with the token, lists every
//! pipeline (one in a process of its own), shows the applied rate while messages flow,
//! shows a pipeline as retrying with its error once its database is gone, and logs no
//! error of its own on the way. The test leaves a screenshot in `target/dashboard.png`.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use golconde_e2e::{
    browser::{chromium, Page},
    build_dir,
    services::{real_config, unique, Database, Queues},
    Daemon, Scratch,
};

const TOKEN: &str = "dashboard-e2e-token";

fn pipeline(name: &str, queue: &str, database: &str, table: &str, extra: &str) -> String {
    format!(
        r#"
[[pipelines]]
name = "{name}"
transport = "rabbit"
queue = "{queue}"
processor = {{ plugin = "autosql" }}
database = "{database}"
table = "{table}"
batch = {{ max_messages = 100, max_wait_ms = 20 }}
retry = {{ initial_backoff_ms = 100, max_backoff_ms = 1000 }}
{extra}
"#
    )
}

fn changes(from: u64, n: u64) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            format!(
                r#"{{"action": "set", "data": {{"id": {}, "note": "n{i}"}}}}"#,
                i % 5000
            )
        })
        .collect()
}

/// Publishes orders and invoices until dropped (also when the test fails, before its
/// queues are deleted).
struct Producer {
    flowing: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    fn start(orders: &str, billing: &str) -> Producer {
        let flowing = Arc::new(AtomicBool::new(true));
        let thread = {
            let flowing = flowing.clone();
            let (orders, billing) = (orders.to_string(), billing.to_string());
            std::thread::spawn(move || {
                let queues = Queues::new();
                let mut next = 0;
                while flowing.load(Ordering::Relaxed) {
                    queues.publish(&orders, &changes(next, 40));
                    queues.publish(&billing, &changes(next, 10));
                    next += 40;
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Producer {
            flowing,
            thread: Some(thread),
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.flowing.store(false, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The card of pipeline `name`, in JavaScript.
fn card(name: &str) -> String {
    format!("document.querySelector('[data-pipeline=\"{name}\"]')")
}

#[test]
fn the_page_shows_every_pipeline_live_and_a_database_that_is_gone() {
    let Some(chromium) = chromium() else {
        return;
    };
    let mut queues = Queues::new();
    let orders_queue = queues.name("dash-orders");
    let audit_queue = queues.name("dash-audit");
    let billing_queue = queues.name("dash-billing");
    let shop = Database::create(
        "dash_shop",
        "create table orders (id bigint primary key, note text);
         create table invoices (id bigint primary key, note text);",
    );
    let audit = Database::create(
        "dash_audit",
        "create table audit (id bigint primary key, note text)",
    );
    let scratch = Scratch::new();
    let pipelines = pipeline("orders", &orders_queue, "shop", "orders", "workers = 4")
        + &pipeline("audit", &audit_queue, "audit", "audit", "")
        + &pipeline(
            "billing",
            &billing_queue,
            "shop",
            "invoices",
            "isolation = \"process\"",
        );
    let text = real_config(
        &unique("dashboard"),
        &[("shop", &shop, ""), ("audit", &audit, "")],
        &pipelines,
    )
    .replacen(
        "[log]",
        &format!("[stats]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n[log]"),
        1,
    );
    let config = scratch.config(&text);
    queues.publish(&audit_queue, &changes(0, 50));
    queues.publish(&billing_queue, &changes(0, 200));

    let mut daemon = Daemon::start(&config);
    let address = daemon.stats_address();

    // Orders and invoices keep coming while the page watches.
    let producer = Producer::start(&orders_queue, &billing_queue);

    let page = Page::open(
        &chromium,
        &format!("http://{address}/?token={TOKEN}"),
        (1400, 1300),
    );
    assert_eq!(
        page.eval("location.pathname + location.search"),
        "/",
        "signing in leaves the token out of the address"
    );
    let listed = page.wait_for(
        "[...document.querySelectorAll('.pipeline h2')].map(h => h.textContent).join() \
         === 'orders,audit,billing'",
        Duration::from_secs(30),
    );
    assert!(
        listed,
        "the page does not list the pipelines:\n{}",
        page.text()
    );

    let applied = page.wait_for(
        &format!(
            "Number({}.querySelector('.number.applied .value').dataset.value) > 0",
            card("orders")
        ),
        Duration::from_secs(60),
    );
    assert!(applied, "no applied rate for `orders`:\n{}", page.text());
    // The process's counters reach the page through the daemon, as the others' do.
    let billing = page.wait_for(
        &format!(
            "{0}.dataset.state === 'running' && {0}.querySelector('.meta').textContent \
             .includes('own process, pid') && \
             Number({0}.querySelector('.number.applied .value').dataset.value) > 0",
            card("billing")
        ),
        Duration::from_secs(60),
    );
    assert!(
        billing,
        "`billing` is not shown running in its own process:\n{}",
        page.text()
    );

    // The audit database goes away; the next changes for it cannot be applied.
    drop(audit);
    queues.publish(&audit_queue, &changes(50, 20));
    let retrying = page.wait_for(
        &format!(
            "{0}.dataset.state === 'retrying' && !{0}.querySelector('.error').hidden && \
             {0}.querySelector('.error').textContent.includes('cannot open a session')",
            card("audit")
        ),
        Duration::from_secs(60),
    );
    assert!(retrying, "`audit` is not shown retrying:\n{}", page.text());
    assert_eq!(
        page.eval(&format!("{}.dataset.state", card("orders"))),
        "running"
    );

    // A few more seconds of history on the charts, for the picture.
    std::thread::sleep(Duration::from_secs(5));
    let screenshot = build_dir().parent().expect("target/").join("dashboard.png");
    page.screenshot(&screenshot);
    // Shown even when the harness keeps the test's output.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("dashboard screenshot: {}\n", screenshot.display()).as_bytes(),
    );

    let problems = page.problems();
    assert!(
        problems.is_empty(),
        "the page logged errors:\n{}",
        problems.join("\n")
    );

    drop(producer);
    drop(page);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

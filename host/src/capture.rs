//! `golconde capture install|uninstall|status`: capturing a PostgreSQL table's changes
//! into an outbox, in the transaction that makes them, with a trigger of plain PL/pgSQL
//! (the SQL and why its order is right: `golconde_pg::outbox`; for operators:
//! docs/capture.md).
//!
//! The database is a `[databases.NAME]` section of the configuration file with `plugin =
//! "postgres"`: its `dsn` (and `connect_timeout_ms`) are read as that plugin reads them.
//! May depend on: the configuration (`config`), `golconde-pg`, tokio-postgres, tokio.

use std::{path::Path, time::Duration};

use anyhow::{anyhow, bail, Context as _};
use golconde_pg::{
    connect::describe_error,
    dsn::Target,
    outbox::{self, Name},
};
use tokio_postgres::Client;

use crate::config::ConfigFile;

/// What to do.
pub enum Action {
    Install { table: String, outbox: String },
    Uninstall { table: String },
    Status,
}

/// Runs `action` against the database `database` of the configuration file `config`;
/// with `print`, prints the SQL instead of running it.
pub fn run(config: &Path, database: &str, action: Action, print: bool) -> anyhow::Result<()> {
    let file = ConfigFile::load(config)?;
    let target = target(&file, database)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    runtime.block_on(async {
        let (client, connection, _) = golconde_pg::connect::open(&target)
            .await
            .map_err(|e| anyhow!("database `{database}`: {e}"))?;
        let driver = tokio::spawn(connection);
        let result = match action {
            Action::Install { table, outbox } => {
                install(&client, &table, &outbox, print, &target.target).await
            }
            Action::Uninstall { table } => uninstall(&client, &table, print).await,
            Action::Status => status(&client, &target.target).await,
        };
        drop(client);
        let _ = driver.await;
        result
    })
}

/// The connection options of `[databases.NAME]`, which must be a `postgres` database.
fn target(file: &ConfigFile, database: &str) -> anyhow::Result<Target> {
    let path = file.path.display();
    let section = file.config.databases.get(database).ok_or_else(|| {
        let known: Vec<&str> = file.config.databases.keys().map(String::as_str).collect();
        anyhow!(
            "{path}: no `[databases.{database}]`; the file declares {}",
            if known.is_empty() {
                "no database".to_string()
            } else {
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    })?;
    let section = section.get_ref();
    if section.plugin != "postgres" {
        bail!(
            "{path}: `[databases.{database}]` uses plugin `{}`; capture works on PostgreSQL: \
             name a database with `plugin = \"postgres\"`",
            section.plugin
        );
    }
    let dsn = section
        .settings
        .get("dsn")
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow!("{path}: `[databases.{database}]` has no `dsn`"))?;
    let timeout = section
        .settings
        .get("connect_timeout_ms")
        .and_then(|v| v.as_integer())
        .filter(|ms| *ms > 0)
        .unwrap_or(10_000);
    Target::parse(dsn, Duration::from_millis(timeout as u64))
        .map_err(|e| anyhow!("{path}: `[databases.{database}]`: {e}"))
}

fn name(kind: &str, text: &str) -> anyhow::Result<Name> {
    Name::parse(text).map_err(|e| anyhow!("--{kind}: {e}"))
}

async fn install(
    client: &Client,
    table: &str,
    outbox: &str,
    print: bool,
    target: &str,
) -> anyhow::Result<()> {
    let table = name("table", table)?;
    let outbox = name("outbox", outbox)?;
    let source = outbox::describe(client, &table)
        .await
        .map_err(|e| anyhow!("cannot capture `{table}` on {target}: {e}"))?;
    let sql = outbox::install_sql(&source, &outbox);
    if print {
        print!("{sql}");
        return Ok(());
    }
    client.batch_execute(&sql).await.map_err(|e| {
        anyhow!(
            "installing capture of `{}` on {target} failed, and nothing was changed: {}",
            source.resolved,
            describe_error(&e)
        )
    })?;
    println!(
        "capturing {} into outbox {outbox}: each insert, update and delete is written there \
         in its own transaction, as a message naming the table `{}` and its row by ({})",
        source.resolved,
        source.name,
        source.key.join(", ")
    );
    if !source.generated.is_empty() {
        println!(
            "generated columns left out of messages: {}",
            source.generated.join(", ")
        );
    }
    if !source.bytea.is_empty() {
        println!("bytea columns sent as base64: {}", source.bytea.join(", "));
    }
    Ok(())
}

async fn uninstall(client: &Client, table: &str, print: bool) -> anyhow::Result<()> {
    let table = name("table", table)?;
    let resolved: Option<String> = client
        .query_one(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
            &[&table.sql()],
        )
        .await
        .map_err(|e| anyhow!("looking for `{table}`: {}", describe_error(&e)))?
        .get(0);
    let resolved = resolved.ok_or_else(|| anyhow!("table `{table}` does not exist"))?;
    let installed = outbox::installed(client)
        .await
        .map_err(|e| anyhow!("listing captured tables: {e}"))?;
    let Some(found) = installed.iter().find(|i| i.table == resolved) else {
        println!("{resolved} is not captured; nothing to do");
        return Ok(());
    };
    let sql = outbox::uninstall_sql(found);
    if print {
        print!("{sql}");
        return Ok(());
    }
    client.batch_execute(&sql).await.map_err(|e| {
        anyhow!(
            "uninstalling capture of `{resolved}` failed, and nothing was changed: {}",
            describe_error(&e)
        )
    })?;
    println!("{resolved} is no longer captured; what its outbox holds stays there until consumed");
    Ok(())
}

async fn status(client: &Client, target: &str) -> anyhow::Result<()> {
    let installed = outbox::installed(client)
        .await
        .map_err(|e| anyhow!("listing captured tables on {target}: {e}"))?;
    if installed.is_empty() {
        println!("no table is captured on {target}");
        return Ok(());
    }
    println!("captured on {target}:");
    let mut outboxes: Vec<String> = Vec::new();
    for table in &installed {
        let into = table.outbox.as_deref();
        println!(
            "  {} -> {}",
            table.table,
            into.unwrap_or("(an outbox its trigger does not name: install it again)")
        );
        if let Some(into) = into {
            if !outboxes.iter().any(|o| o == into) {
                outboxes.push(into.to_string());
            }
        }
    }
    for text in outboxes {
        let Ok(outbox) = Name::parse(&text) else {
            continue;
        };
        let query = format!(
            "SELECT count(*), coalesce(to_char(now() - min(created_at), 'HH24:MI:SS'), '-') \
             FROM {}",
            outbox.sql()
        );
        match client.query_one(&query, &[]).await {
            Ok(row) => {
                let (waiting, oldest): (i64, String) = (row.get(0), row.get(1));
                println!("outbox {text}: {waiting} message(s) waiting, the oldest for {oldest}");
            }
            Err(e) => println!("outbox {text}: cannot be read: {}", describe_error(&e)),
        }
    }
    Ok(())
}

//! The processor suite: what the host's dispatcher relies on when it turns messages into
//! changes, and fan-out copies out of committed ones.

use std::{collections::HashSet, sync::Arc, time::Duration};

use crate::{
    abi::{PluginKind, ProcessorBox},
    data::{Action, Applied, Change, Column, Message, Value},
    error::{ErrorKind, PluginError},
    sdk::Processor,
    testing::{build_processor, Library},
    RVec,
};

use super::{bounded, config_object, configuration, describe, show, Report, DEFAULT_TIME_LIMIT};

/// What [`processor`] needs to know about the processor under test.
pub struct ProcessorSuite {
    /// The processor's configuration section, as a JSON object (what the host passes: the
    /// pipeline's section, with `table` and `tables`).
    pub config: String,
    /// Messages the processor must accept, at least one; list one of each shape the
    /// format has (insert, upsert, update, delete). Each must give a change of at least one
    /// operation, every operation naming a table, with a restriction for `Update` and
    /// `Delete` and data for `Upsert` and `Update`, no column twice; the same change each
    /// time (its `id` is the idempotency key of redeliveries).
    pub good: Vec<Message>,
    /// Messages the processor acknowledges without writing anything (a tombstone, say):
    /// each must give a change with no operation, twice the same. A hostile input with the
    /// same body as one of these (an empty body) is expected to be skipped, not refused.
    pub skipped: Vec<Message>,
    /// What the database returns for each `Insert` operation when [`ProcessorSuite::good`]
    /// are checked with `enrich`: the generated keys (default `id` = 1).
    pub returned: Vec<Column>,
    /// The processor takes any body as data (it stores the bytes as they are): hostile
    /// inputs may then be accepted, and are only checked to give a well-formed change or a
    /// permanent error, in time. False by default: hostile inputs must be refused.
    pub accepts_any_body: bool,
    /// How long one call may take before it is reported as hung (default
    /// [`DEFAULT_TIME_LIMIT`]). The hostile inputs are up to a few MiB.
    pub time_limit: Duration,
    /// The plugin's library, to check that it lists the processor:
    /// `Some(golconde_plugin_api::testing::library!(your_crate))`.
    pub library: Option<Library>,
}

impl Default for ProcessorSuite {
    fn default() -> ProcessorSuite {
        ProcessorSuite {
            config: "{}".into(),
            good: Vec::new(),
            skipped: Vec::new(),
            returned: vec![Column::new("id", Value::Int(1))],
            accepts_any_body: false,
            time_limit: DEFAULT_TIME_LIMIT,
            library: None,
        }
    }
}

/// Checks processor `P` against the contract, and panics with a report of every check that
/// failed.
///
/// Besides what every kind is checked for (see [`super`]):
/// - each of [`ProcessorSuite::good`] gives a well-formed change (see the field), twice the
///   same;
/// - each of [`ProcessorSuite::skipped`] gives a change with no operation, twice the same;
/// - hostile inputs (an empty body, invalid UTF-8, 1 MiB of `[`, an object of 100,000
///   fields, random bytes, each good message cut in half) give a [`ErrorKind::Permanent`]
///   error, never a transient, config or panic one, and never hang; the processor then
///   still gives the same changes for the good messages;
/// - `enrich` of each good message with an empty [`Applied`], and with
///   [`ProcessorSuite::returned`] for each `Insert`, gives a message the processor accepts
///   (what replicas are sent must apply there).
///
/// # Panics
/// When any check failed, with the list of them.
pub fn processor<P: Processor>(suite: ProcessorSuite) {
    let mut report = Report::new(PluginKind::Processor, P::NAME);
    run::<P>(&mut report, &suite);
    report.finish();
}

fn run<P: Processor>(report: &mut Report, suite: &ProcessorSuite) {
    describe::<P>(
        report,
        PluginKind::Processor,
        suite.library.as_ref(),
        &suite.config,
    );
    let config = match config_object(&suite.config) {
        Ok(config) => config,
        Err(why) => return report.check("builds from the suite's `config`", Err(why)),
    };
    let limit = suite.time_limit;
    let built = {
        let json = suite.config.clone();
        bounded(limit, "building", move || {
            build_processor::<P>(&json).map(Arc::new)
        })
    };
    let processor = match built {
        Ok(Ok(processor)) => {
            report.check("builds from the suite's `config`", Ok(()));
            processor
        }
        Ok(Err(e)) => {
            return report.check("builds from the suite's `config`", Err(show(&e)));
        }
        Err(hung) => return report.check("builds from the suite's `config`", Err(hung)),
    };
    configuration(report, &config, limit, |json| {
        build_processor::<P>(&json).map(drop)
    });

    if suite.good.is_empty() {
        report.check(
            "accepts the good messages",
            Err("the suite's `good` is empty: list messages the processor accepts".into()),
        );
        return;
    }
    // Later checks use the good messages that passed; hostile inputs need none of them.
    let changes = good(report, &processor, suite);
    skipped(report, &processor, suite);
    hostile(report, &processor, suite);
    report.check(
        "still accepts the good messages after refusing hostile ones",
        same_changes(&processor, suite, &changes),
    );
    enrich(report, &processor, suite, &changes);

    let fresh = {
        let json = suite.config.clone();
        bounded(limit, "building", move || {
            build_processor::<P>(&json).map(Arc::new)
        })
    };
    report.check(
        "a new instance, built after the errors, accepts the good messages",
        match fresh {
            Ok(Ok(fresh)) => same_changes(&fresh, suite, &changes),
            Ok(Err(e)) => Err(format!("building failed: {}", show(&e))),
            Err(hung) => Err(hung),
        },
    );
}

/// Processes `message` on a thread of its own, within the time limit.
fn process(
    processor: &Arc<ProcessorBox>,
    message: &Message,
    limit: Duration,
) -> Result<Result<Change, PluginError>, String> {
    let processor = processor.clone();
    let message = message.clone();
    bounded(limit, "`process`", move || {
        processor.process(&message).into_result()
    })
}

/// How a message is named in the report: its first bytes.
fn excerpt(message: &Message) -> String {
    let body = message.body.as_slice();
    let shown: String = String::from_utf8_lossy(&body[..body.len().min(60)])
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if body.len() > 60 {
        format!("`{shown}…` ({} bytes)", body.len())
    } else {
        format!("`{shown}`")
    }
}

/// What is wrong with a change, as the host and databases need it.
fn malformed(change: &Change) -> Option<String> {
    if change.operations.is_empty() {
        return Some("the change has no operation".into());
    }
    for (i, op) in change.operations.iter().enumerate() {
        let at = format!("operation {i} ({:?} on {:?})", op.action, op.table.as_str());
        if op.table.trim().is_empty() {
            return Some(format!("{at} names no table"));
        }
        if matches!(op.action, Action::Update | Action::Delete) && op.restriction.is_empty() {
            return Some(format!("{at} has no restriction: it would touch every row"));
        }
        if matches!(op.action, Action::Upsert | Action::Update) && op.data.is_empty() {
            return Some(format!("{at} has no data"));
        }
        for (part, columns) in [("data", &op.data), ("restriction", &op.restriction)] {
            let mut seen = HashSet::new();
            for column in columns.iter() {
                if column.name.trim().is_empty() {
                    return Some(format!("{at} has a column without a name in its {part}"));
                }
                if !seen.insert(column.name.as_str()) {
                    return Some(format!(
                        "{at} has column `{}` twice in its {part}",
                        column.name
                    ));
                }
            }
        }
    }
    None
}

/// Checks each good message; the change of each, `None` for those that failed.
fn good(
    report: &mut Report,
    processor: &Arc<ProcessorBox>,
    suite: &ProcessorSuite,
) -> Vec<Option<Change>> {
    let mut changes = Vec::new();
    for message in &suite.good {
        let what = format!("accepts good message {}", excerpt(message));
        let outcome = process(processor, message, suite.time_limit).and_then(|first| {
            let change = first.map_err(|e| format!("refused with {}", show(&e)))?;
            if let Some(why) = malformed(&change) {
                return Err(format!("{why}: {change:?}"));
            }
            let again = process(processor, message, suite.time_limit)?
                .map_err(|e| format!("refused the second time with {}", show(&e)))?;
            if again != change {
                return Err(format!(
                    "the same message gave two different changes (a redelivery must give the \
                     same change, with the same id): {change:?} and then {again:?}"
                ));
            }
            Ok(change)
        });
        match outcome {
            Ok(change) => {
                report.check(&what, Ok(()));
                changes.push(Some(change));
            }
            Err(why) => {
                report.check(&what, Err(why));
                changes.push(None);
            }
        }
    }
    changes
}

/// Checks that each message the suite lists as skipped gives an empty change, the same twice.
fn skipped(report: &mut Report, processor: &Arc<ProcessorBox>, suite: &ProcessorSuite) {
    for message in &suite.skipped {
        let what = format!("skips {} (a change with no operation)", excerpt(message));
        let outcome =
            (0..2).try_for_each(|_| match process(processor, message, suite.time_limit)? {
                Ok(change) if change.operations.is_empty() => Ok(()),
                Ok(change) => Err(format!(
                    "gave {} operation(s): {change:?}",
                    change.operations.len()
                )),
                Err(e) => Err(format!("refused with {}", show(&e))),
            });
        report.check(&what, outcome);
    }
}

/// Bytes that look like nothing, the same on every run.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    // xorshift64*: enough to look random to a parser, and reproducible.
    let mut state = seed.max(1);
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Inputs written to hurt a parser, by name.
fn hostile_inputs(suite: &ProcessorSuite) -> Vec<(String, Message)> {
    let mut wide = String::with_capacity(1_600_000);
    wide.push('{');
    for i in 0..100_000 {
        if i > 0 {
            wide.push(',');
        }
        wide.push_str(&format!("\"f{i}\":{i}"));
    }
    wide.push('}');
    let mut inputs = vec![
        ("an empty body".to_string(), Message::new(Vec::new())),
        (
            "invalid UTF-8".to_string(),
            Message::new(b"\xff\xfe\xfd{\"\xc3\x28\": \x80}".to_vec()),
        ),
        (
            "1 MiB of `[`".to_string(),
            Message::new(vec![b'['; 1 << 20]),
        ),
        (
            "1 MiB of `{\"a\":`".to_string(),
            Message::new(b"{\"a\":".repeat((1 << 20) / 5)),
        ),
        (
            "an object of 100,000 fields".to_string(),
            Message::new(wide),
        ),
    ];
    for (seed, len) in [(1u64, 16usize), (2, 4096), (3, 1 << 20)] {
        inputs.push((
            format!("{len} random bytes (seed {seed})"),
            Message::new(random_bytes(seed, len)),
        ));
    }
    for message in &suite.good {
        let half = message.body.len() / 2;
        let mut cut = message.clone();
        cut.body = RVec::from(&message.body.as_slice()[..half]);
        inputs.push((
            format!("good message {} cut in half", excerpt(message)),
            cut,
        ));
    }
    inputs
}

fn hostile(report: &mut Report, processor: &Arc<ProcessorBox>, suite: &ProcessorSuite) {
    for (name, message) in hostile_inputs(suite) {
        if suite.skipped.iter().any(|s| s.body == message.body) {
            continue; // checked by `skipped`
        }
        let what = if suite.accepts_any_body {
            format!("answers {name} with a change or a permanent error, in time")
        } else {
            format!("refuses {name} with a permanent error, in time")
        };
        let outcome = match process(processor, &message, suite.time_limit) {
            Err(hung) => Err(hung),
            Ok(Err(e)) if e.kind == ErrorKind::Permanent => Ok(()),
            Ok(Err(e)) => Err(format!(
                "refused with {}; a message's own fault must be permanent (the host retries \
                 transient errors for ever, and rebuilds the instance after a panic)",
                show(&e)
            )),
            Ok(Ok(change)) if suite.accepts_any_body => match malformed(&change) {
                None => Ok(()),
                Some(why) => Err(format!("accepted, but {why}")),
            },
            Ok(Ok(change)) => Err(format!(
                "accepted, as {} operation(s); if the processor takes any body, set \
                 `accepts_any_body`",
                change.operations.len()
            )),
        };
        report.check(&what, outcome);
    }
}

/// Whether each good message that passed still gives the change it gave at first.
fn same_changes(
    processor: &Arc<ProcessorBox>,
    suite: &ProcessorSuite,
    changes: &[Option<Change>],
) -> Result<(), String> {
    for (message, expected) in suite.good.iter().zip(changes) {
        let Some(expected) = expected else { continue };
        match process(processor, message, suite.time_limit)? {
            Ok(change) if &change == expected => {}
            Ok(change) => {
                return Err(format!(
                    "{} now gives {change:?}, and gave {expected:?}",
                    excerpt(message)
                ))
            }
            Err(e) => return Err(format!("{} is now refused: {}", excerpt(message), show(&e))),
        }
    }
    Ok(())
}

fn enrich(
    report: &mut Report,
    processor: &Arc<ProcessorBox>,
    suite: &ProcessorSuite,
    changes: &[Option<Change>],
) {
    for (message, change) in suite.good.iter().zip(changes) {
        let Some(change) = change else { continue };
        let mut cases = vec![("an empty `Applied`", Applied::default())];
        if change
            .operations
            .iter()
            .any(|op| op.action == Action::Insert)
        {
            let returned = change
                .operations
                .iter()
                .map(|op| match op.action {
                    Action::Insert => RVec::from(suite.returned.clone()),
                    _ => RVec::new(),
                })
                .collect();
            cases.push((
                "the generated keys of its insert",
                Applied {
                    returned,
                    duplicate: false,
                },
            ));
        }
        for (applied_name, applied) in cases {
            let what = format!(
                "`enrich` of {} with {applied_name} gives a message it accepts",
                excerpt(message)
            );
            let outcome = {
                let processor = processor.clone();
                let message = message.clone();
                bounded(suite.time_limit, "`enrich`", move || {
                    processor.enrich(&message, &applied).into_result()
                })
            }
            .and_then(|copy| {
                let copy = copy.map_err(|e| format!("`enrich` failed: {}", show(&e)))?;
                match process(processor, &copy, suite.time_limit)? {
                    Ok(change) => match malformed(&change) {
                        None => Ok(()),
                        Some(why) => Err(format!("the copy {}: {why}", excerpt(&copy))),
                    },
                    Err(e) => Err(format!(
                        "the copy {} is refused: {}",
                        excerpt(&copy),
                        show(&e)
                    )),
                }
            });
            report.check(&what, outcome);
        }
    }
}

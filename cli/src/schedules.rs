//! `tasker schedules`: list, show, add, rm, pause, resume, trigger, and `apply FILE`, which
//! makes the stored schedules exactly those of a YAML file kept in git.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{Value, json};
use tasker::api::schedules::parse_schedule;
use tasker::engine::ScheduleView;
use tasker::schedule::{Schedule, ScheduleSpec};
use tasker::{AnyStore, Tasker, TaskerError};

use crate::operator::{print_object, print_task};
use crate::{CliError, OutputArgs, StoreArgs};

#[derive(Subcommand)]
pub(crate) enum SchedulesCommand {
    /// List the schedules with their next fire time.
    List {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one schedule and its next five fire times.
    Show {
        /// Schedule name.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Create a schedule, as POST /schedules does (same rules).
    Add {
        /// Unique name: 1-128 characters of A-Z a-z 0-9 _ . : -
        name: String,
        /// Cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
        /// seconds first.
        #[arg(long)]
        cron: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// The registered task type each tick creates.
        #[arg(long = "type")]
        task_type: String,
        /// Payload of each tick's task, JSON as POST /schedules takes it (a JSON string is stored
        /// as its text).
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Attempts of each tick's task (default: the type's).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Ticks missed while no processor ran: latest, skip or all.
        #[arg(long, default_value = "latest")]
        missed: String,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a schedule (the tasks its ticks created stay).
    Rm {
        /// Schedule name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Pause a schedule: it fires nothing until resumed.
    Pause {
        /// Schedule name.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Resume a schedule from its next tick (ticks passed while paused do not fire).
    Resume {
        /// Schedule name.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Run one tick now: create the schedule's task, due now; print it.
    Trigger {
        /// Schedule name.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make the stored schedules exactly those in FILE: create the new ones, update the
    /// changed ones, delete the ones the file no longer lists. Repeating it changes nothing.
    Apply {
        /// YAML file: `schedules:` followed by a list of schedules as POST /schedules takes them.
        file: PathBuf,
        /// Print what would change, and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
}

impl SchedulesCommand {
    /// Where the schedules are.
    pub(crate) fn store(&self) -> &StoreArgs {
        match self {
            Self::List { store, .. }
            | Self::Show { store, .. }
            | Self::Add { store, .. }
            | Self::Rm { store, .. }
            | Self::Pause { store, .. }
            | Self::Resume { store, .. }
            | Self::Trigger { store, .. }
            | Self::Apply { store, .. } => store,
        }
    }
}

/// Runs `command` over `tasker`.
pub(crate) async fn run(
    command: SchedulesCommand,
    tasker: &Tasker<AnyStore>,
) -> Result<(), CliError> {
    match command {
        SchedulesCommand::List { output, .. } => list(tasker, output.json).await,
        SchedulesCommand::Show { name, output, .. } => {
            print_schedule(tasker.schedule(&name).await?, output.json)
        }
        SchedulesCommand::Add {
            name,
            cron,
            timezone,
            task_type,
            payload,
            max_attempts,
            missed,
            paused,
            output,
            ..
        } => {
            let spec = ScheduleSpec {
                name,
                cron,
                timezone,
                task_type,
                payload: crate::create::payload_text(&payload)?,
                max_attempts,
                missed: missed
                    .parse()
                    .map_err(|err| CliError::Usage(format!("--missed: {err}")))?,
                paused,
            };
            print_schedule(tasker.create_schedule(spec).await?, output.json)
        }
        SchedulesCommand::Rm { name, .. } => {
            tasker.delete_schedule(&name).await?;
            out!("deleted schedule {name}");
            Ok(())
        }
        SchedulesCommand::Pause { name, output, .. } => {
            print_schedule(tasker.pause_schedule(&name).await?, output.json)
        }
        SchedulesCommand::Resume { name, output, .. } => {
            print_schedule(tasker.resume_schedule(&name).await?, output.json)
        }
        SchedulesCommand::Trigger { name, output, .. } => {
            print_task(&tasker.trigger_schedule(&name).await?, output.json)
        }
        SchedulesCommand::Apply {
            file,
            dry_run,
            output,
            ..
        } => {
            let specs = read_file(&file)?;
            apply(tasker, specs, dry_run, output.json).await
        }
    }
}

/// `tasker schedules list`: every schedule with its next run, as a table or JSON.
async fn list(tasker: &Tasker<AnyStore>, json: bool) -> Result<(), CliError> {
    let views: Vec<ScheduleView> = tasker
        .schedules()
        .await?
        .into_iter()
        .map(ScheduleView::of)
        .collect();
    if json {
        out!("{}", json!({ "schedules": views }));
        return Ok(());
    }
    out!(
        "{:<32} {:<20} {:<20} {:<20} {:<24} {}",
        "NAME",
        "CRON",
        "TIMEZONE",
        "TYPE",
        "NEXT RUN",
        "PAUSED"
    );
    for view in &views {
        let s = &view.schedule;
        let next = s
            .next_run_at
            .map_or_else(|| "-".to_owned(), |t| t.to_text());
        let paused = if s.paused { "yes" } else { "no" };
        out!(
            "{:<32} {:<20} {:<20} {:<20} {:<24} {paused}",
            s.name,
            s.cron,
            s.timezone,
            s.task_type,
            next
        );
    }
    Ok(())
}

fn print_schedule(schedule: Schedule, json: bool) -> Result<(), CliError> {
    print_object(&serde_json::to_value(ScheduleView::of(schedule))?, json)
}

/// The schedules of a YAML file, each checked by the API's rules; every problem names the
/// file, the schedule's place in it and the field.
fn read_file(file: &PathBuf) -> Result<Vec<ScheduleSpec>, CliError> {
    let place = file.display();
    let text = std::fs::read_to_string(file)
        .map_err(|err| CliError::Usage(format!("cannot read {place}: {err}")))?;
    parse_file(&text).map_err(|err| CliError::Usage(format!("{place}{err}")))
}

/// The schedules of a schedules file's `text`, each checked by the API's rules (not yet
/// against the registered types); a problem is told as `: schedule N: <what>`, to follow the
/// file's name.
pub fn parse_file(text: &str) -> Result<Vec<ScheduleSpec>, String> {
    let document: Value =
        serde_yaml_ng::from_str(text).map_err(|err| format!(" is not valid YAML: {err}"))?;
    let Some(items) = document.get("schedules").and_then(Value::as_array) else {
        return Err(": expected a top-level `schedules:` list".to_owned());
    };
    let mut specs = Vec::with_capacity(items.len());
    let mut names = BTreeSet::new();
    for (index, item) in items.iter().enumerate() {
        let body =
            serde_json::to_vec(item).map_err(|err| format!(": schedule {}: {err}", index + 1))?;
        let spec = parse_schedule(&body, None)
            .map_err(|err| format!(": schedule {}: {}", index + 1, err.message))?;
        if !names.insert(spec.name.clone()) {
            return Err(format!(
                ": schedule {}: the name {:?} is given twice",
                index + 1,
                spec.name
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Creates, updates and deletes so that the stored schedules are `specs`. Every schedule is
/// checked (rules and registered types) before anything is written.
async fn apply(
    tasker: &Tasker<AnyStore>,
    specs: Vec<ScheduleSpec>,
    dry_run: bool,
    json: bool,
) -> Result<(), CliError> {
    for spec in &specs {
        tasker
            .validate_schedule(spec)
            .map_err(|err| CliError::Usage(format!("schedule {:?}: {err}", spec.name)))?;
    }
    let stored: BTreeMap<String, Schedule> = tasker
        .schedules()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut plan: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for spec in &specs {
        let action = match stored.get(&spec.name) {
            None => "created",
            Some(current) if current.spec() == *spec => "unchanged",
            Some(_) => "updated",
        };
        if action != "unchanged" && !dry_run {
            tasker.put_schedule(spec.clone()).await?;
        }
        plan.entry(action).or_default().push(spec.name.clone());
    }
    let listed: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for name in stored.keys().filter(|name| !listed.contains(name.as_str())) {
        if !dry_run {
            match tasker.delete_schedule(name).await {
                // Gone already (the DynamoDB list is eventually consistent): done.
                Ok(()) | Err(TaskerError::ScheduleNotFound(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        plan.entry("deleted").or_default().push(name.clone());
    }
    if json {
        out!("{}", json!({ "dryRun": dry_run, "changes": plan }));
        return Ok(());
    }
    let verb = if dry_run { "would be " } else { "" };
    for (action, names) in &plan {
        for name in names {
            out!("{verb}{action}: {name}");
        }
    }
    Ok(())
}

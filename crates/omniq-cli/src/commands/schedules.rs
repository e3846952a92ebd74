//! `omniq schedules list|show|pause|resume|delete|preview`.

use chrono::Utc;
use omniq_async::{AsyncOmniQ, ErrorKind, Schedule};
use serde_json::json;

use crate::cli::SchedulesCommand;
use crate::exit::Exit;
use crate::output::{Table, print_json};
use crate::view;

pub(super) async fn run(
    omniq: &AsyncOmniQ,
    command: SchedulesCommand,
    json: bool,
) -> anyhow::Result<()> {
    let schedules = omniq.schedules();
    let now = Utc::now();
    match command {
        SchedulesCommand::List => {
            let list = schedules.list().await?;
            if json {
                return print_json(&list.iter().map(view::schedule_json).collect());
            }
            let mut table = Table::new(&view::SCHEDULE_HEADERS);
            for schedule in &list {
                table.row(view::schedule_row(schedule, now));
            }
            table.print("no schedules")
        }
        SchedulesCommand::Show { name } => match schedules.get(&name).await? {
            Some(schedule) => print_one(&schedule, json, now),
            None => Err(missing(&name)),
        },
        SchedulesCommand::Pause { name } => {
            let schedule = schedules
                .pause(&name)
                .await
                .map_err(|e| not_found(e, &name))?;
            print_one(&schedule, json, now)
        }
        SchedulesCommand::Resume { name } => {
            let schedule = schedules
                .resume(&name)
                .await
                .map_err(|e| not_found(e, &name))?;
            print_one(&schedule, json, now)
        }
        SchedulesCommand::Delete { name } => {
            if !schedules.delete(&name).await? {
                return Err(missing(&name));
            }
            if json {
                print_json(&json!({ "deleted": name }))
            } else {
                println!("{name}  deleted");
                Ok(())
            }
        }
        SchedulesCommand::Preview { name, count } => {
            let times = schedules
                .preview(&name, count)
                .await
                .map_err(|e| not_found(e, &name))?;
            if json {
                return print_json(&json!({
                    "name": name,
                    "next": times.iter().map(|at| view::time(*at)).collect::<Vec<_>>(),
                }));
            }
            for at in times {
                println!("{}", view::time(at));
            }
            Ok(())
        }
    }
}

fn missing(name: &str) -> anyhow::Error {
    Exit::not_found(format!("no schedule `{name}`")).into()
}

fn not_found(err: omniq_async::Error, name: &str) -> anyhow::Error {
    if err.kind() == ErrorKind::NotFound {
        missing(name)
    } else {
        err.into()
    }
}

fn print_one(schedule: &Schedule, json: bool, now: chrono::DateTime<Utc>) -> anyhow::Result<()> {
    if json {
        return print_json(&view::schedule_json(schedule));
    }
    let mut table = Table::new(&view::SCHEDULE_HEADERS);
    table.row(view::schedule_row(schedule, now));
    table.print("")
}

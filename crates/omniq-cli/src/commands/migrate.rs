//! `omniq migrate [--status]`.

use omniq_async::{MigrationStatus, SchemaReport, Settings};
use serde_json::{Value, json};

use crate::output::{Table, print_json};

pub(super) async fn run(settings: &Settings, status_only: bool, json: bool) -> anyhow::Result<()> {
    // The pending list before applying, to say what this run applied.
    let before = omniq_async::schema_status(settings).await?;
    let after = if status_only {
        before.clone()
    } else {
        omniq_async::migrate(settings).await?
    };
    if json {
        let reports: Vec<Value> = after
            .iter()
            .map(|report| report_json(report, &before, status_only))
            .collect();
        return print_json(&Value::Array(reports));
    }
    let mut table = Table::new(&["STORE URL", "STORES", "APPLIED", "PENDING", "THIS RUN"]);
    for report in &after {
        let stores: Vec<&str> = report.stores.iter().map(|k| k.key()).collect();
        let row = match &report.status {
            None => vec![
                report.url.to_string(),
                stores.join(","),
                "-".into(),
                "-".into(),
                "no schema to migrate".into(),
            ],
            Some(status) => vec![
                report.url.to_string(),
                stores.join(","),
                status.applied.len().to_string(),
                status.pending.len().to_string(),
                if status_only {
                    "-".into()
                } else {
                    format!("{} applied", applied_now(report, &before).len())
                },
            ],
        };
        table.row(row);
    }
    table.print("no stores")
}

/// The migrations this run applied to `report`'s schema.
fn applied_now(report: &SchemaReport, before: &[SchemaReport]) -> Vec<i64> {
    let was_pending = before
        .iter()
        .find(|b| b.url == report.url)
        .and_then(|b| b.status.as_ref())
        .map(|s| s.pending.iter().map(|m| m.version).collect::<Vec<_>>())
        .unwrap_or_default();
    report
        .status
        .as_ref()
        .map(|s| {
            s.applied
                .iter()
                .map(|m| m.version)
                .filter(|v| was_pending.contains(v))
                .collect()
        })
        .unwrap_or_default()
}

fn report_json(report: &SchemaReport, before: &[SchemaReport], status_only: bool) -> Value {
    let versions = |status: &MigrationStatus| {
        json!({
            "applied": status.applied.iter().map(|m| json!({"version": m.version, "description": m.description})).collect::<Vec<_>>(),
            "pending": status.pending.iter().map(|m| json!({"version": m.version, "description": m.description})).collect::<Vec<_>>(),
            "newer": status.newer,
        })
    };
    json!({
        "url": report.url.to_string(),
        "stores": report.stores.iter().map(|k| k.key()).collect::<Vec<_>>(),
        "schema": report.status.as_ref().map(versions),
        "applied_now": if status_only { Vec::new() } else { applied_now(report, before) },
    })
}

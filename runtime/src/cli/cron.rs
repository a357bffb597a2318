//! `kiln cron list` and `kiln runs`: a server's cron triggers and run history.

use clap::{Args, Subcommand};

use super::admin::{ServerArgs, millis, text};

#[derive(Subcommand)]
pub enum CronCommand {
    /// Each cron trigger of an app, with its next occurrences.
    List {
        /// The app.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args)]
pub struct RunsArgs {
    /// The app.
    #[arg(long)]
    app: String,
    /// Only this trigger (or one-off job id).
    #[arg(long)]
    trigger: Option<String>,
    /// Only this status: running, succeeded, failed, timed_out, skipped, missed.
    #[arg(long)]
    status: Option<String>,
    /// How many, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u64,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn list(app: &str, server: &ServerArgs) -> anyhow::Result<()> {
    let body = server.get(&format!("/admin/v1/apps/{app}/crons"))?;
    let crons = body["crons"].as_array().cloned().unwrap_or_default();
    if crons.is_empty() {
        println!("app {app} has no cron triggers");
    }
    for cron in crons {
        println!(
            "{} `{}` ({}) -> {}",
            text(&cron["name"]),
            text(&cron["schedule"]),
            text(&cron["timezone"]),
            text(&cron["function"])
        );
        for next in cron["next"].as_array().into_iter().flatten() {
            println!("  next {}", text(next));
        }
    }
    Ok(())
}

pub fn runs(args: RunsArgs) -> anyhow::Result<()> {
    let mut query = format!("limit={}", args.limit);
    if let Some(trigger) = &args.trigger {
        query.push_str(&format!("&trigger={trigger}"));
    }
    if let Some(status) = &args.status {
        query.push_str(&format!("&status={status}"));
    }
    let body = args
        .server
        .get(&format!("/admin/v1/apps/{}/runs?{query}", args.app))?;
    let runs = body["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        println!("no runs");
    }
    for run in runs {
        let took = match (run["started_ms"].as_u64(), run["ended_ms"].as_u64()) {
            (Some(start), Some(end)) => format!(" in {} ms", end.saturating_sub(start)),
            _ => String::new(),
        };
        let error = run["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        println!(
            "{} {} attempt {} {}{took} on {}{error}",
            millis(&run["scheduled_ms"]),
            text(&run["trigger"]),
            run["attempt"],
            text(&run["status"]),
            text(&run["node"]),
        );
    }
    Ok(())
}

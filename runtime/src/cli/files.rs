//! `kiln files`: an app's stored files and the bytes they take, through the
//! admin API.

use clap::{Args, Subcommand};
use reqwest::Method;

use kiln::capabilities::storage::URL_SEGMENT;

use super::admin::{ServerArgs, millis, text};

#[derive(Args)]
pub struct FilesArgs {
    #[command(subcommand)]
    command: FilesCommand,
    /// The app.
    #[arg(long, global = true, default_value = "")]
    app: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
enum FilesCommand {
    /// Files in key order; `--prefix BUCKET/` for one bucket.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue after this key (the `more` of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Deletes a file.
    Rm { key: String },
    /// Files and bytes the app stores.
    Usage,
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

pub fn run(args: FilesArgs) -> anyhow::Result<()> {
    if args.app.is_empty() {
        anyhow::bail!("which app? pass --app APP");
    }
    let base = format!("/admin/v1/apps/{}", args.app);
    let server = &args.server;
    match args.command {
        FilesCommand::List {
            prefix,
            limit,
            cursor,
        } => {
            let mut query = format!("prefix={}&limit={limit}", encode(&prefix));
            if let Some(cursor) = cursor {
                query.push_str(&format!("&cursor={}", encode(&cursor)));
            }
            let body = server.get(&format!("{base}/files?{query}"))?;
            let files = body["files"].as_array().cloned().unwrap_or_default();
            if files.is_empty() {
                println!("no files");
            }
            for f in &files {
                println!(
                    "{} {} bytes {} modified {}",
                    text(&f["key"]),
                    f["size"],
                    text(&f["content_type"]),
                    millis(&f["modified_ms"])
                );
            }
            if let Some(next) = body["cursor"].as_str() {
                println!("more: --cursor {next}");
            }
        }
        FilesCommand::Rm { key } => {
            let path: Vec<String> = key
                .split('/')
                .map(|s| percent_encoding::utf8_percent_encode(s, URL_SEGMENT).to_string())
                .collect();
            server.call(
                Method::DELETE,
                &format!("{base}/files/{}", path.join("/")),
                None,
            )?;
            println!("deleted {key}");
        }
        FilesCommand::Usage => {
            let body = server.get(&format!("{base}/storage"))?;
            println!("{} files, {} bytes", body["files"], body["bytes"]);
        }
    }
    Ok(())
}

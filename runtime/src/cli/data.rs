//! `kiln data`: an app's collections through the admin API, rules passed,
//! so an operator can look at and mend data without writing a function.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::admin::ServerArgs;

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
    /// The app.
    #[arg(long, global = true, default_value = "")]
    app: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
enum DataCommand {
    /// One page of a collection's documents, one JSON document per line.
    List {
        collection: String,
        /// A filter in the database's query language (JSON).
        #[arg(long)]
        filter: Option<String>,
        /// A sort (JSON), e.g. '{"createdAt": -1}'.
        #[arg(long)]
        sort: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue from the `more` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One document.
    Get { collection: String, id: String },
    /// Writes a document (JSON): replaces document ID, or creates one
    /// without an ID (the document's own `_id`, or a new one).
    Put {
        collection: String,
        /// The document, as JSON.
        document: String,
        /// The document to replace.
        #[arg(long)]
        id: Option<String>,
    },
    /// Deletes a document.
    Rm { collection: String, id: String },
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Parses JSON given on the command line, naming the argument on failure.
fn json(what: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{what} is not JSON: {e}"))
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    if args.app.is_empty() {
        anyhow::bail!("which app? pass --app APP");
    }
    let base = format!("/admin/v1/apps/{}/data", args.app);
    let server = &args.server;
    match args.command {
        DataCommand::List {
            collection,
            filter,
            sort,
            limit,
            cursor,
        } => {
            let mut query = format!("limit={limit}");
            for (name, value) in [("filter", filter), ("sort", sort)] {
                if let Some(value) = value {
                    json(&format!("--{name}"), &value)?;
                    query.push_str(&format!("&{name}={}", encode(&value)));
                }
            }
            if let Some(cursor) = cursor {
                query.push_str(&format!("&cursor={}", encode(&cursor)));
            }
            let body = server.get(&format!("{base}/{}?{query}", encode(&collection)))?;
            let documents = body["documents"].as_array().cloned().unwrap_or_default();
            if documents.is_empty() {
                eprintln!("no documents");
            }
            for doc in &documents {
                println!("{doc}");
            }
            if let Some(next) = body["cursor"].as_str() {
                eprintln!("more: --cursor {next}");
            }
        }
        DataCommand::Get { collection, id } => {
            let doc = server.get(&format!("{base}/{}/{}", encode(&collection), encode(&id)))?;
            println!("{doc}");
        }
        DataCommand::Put {
            collection,
            document,
            id,
        } => {
            let doc = json("the document", &document)?;
            let written = match id {
                Some(id) => server.call(
                    Method::PUT,
                    &format!("{base}/{}/{}", encode(&collection), encode(&id)),
                    Some(doc),
                )?,
                None => server.call(
                    Method::POST,
                    &format!("{base}/{}", encode(&collection)),
                    Some(doc),
                )?,
            };
            println!("{}", written["document"]);
        }
        DataCommand::Rm { collection, id } => {
            server.call(
                Method::DELETE,
                &format!("{base}/{}/{}", encode(&collection), encode(&id)),
                None,
            )?;
            println!("deleted {id}");
        }
    }
    Ok(())
}

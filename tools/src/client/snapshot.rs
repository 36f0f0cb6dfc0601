//! `octet snapshot create|list|restore`: snapshots live on the server, under
//! `<data>/snapshots/<collection>/`.

use anyhow::Result;
use clap::{Args, Subcommand};
use octet_server::pb;

use super::collection::print_info;
use super::{ConnectArgs, grpc, runtime};

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub conn: ConnectArgs,
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent snapshot of a collection on the server.
    Create { collection: String },
    /// List snapshots (of one collection, or of all).
    List {
        collection: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot (by the name `snapshot list` gives) as a new collection.
    Restore {
        /// The collection the snapshot was taken of.
        collection: String,
        /// The snapshot's name.
        name: String,
        /// The new collection's name.
        #[arg(long)]
        target: String,
    },
}

pub fn run(args: SnapshotArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut c = args.conn.connect().await?;
        match args.command {
            SnapshotCommand::Create { collection } => {
                let s = c
                    .admin
                    .create_snapshot(pb::CreateSnapshotRequest { collection })
                    .await
                    .map_err(grpc)?
                    .into_inner();
                println!(
                    "snapshot {} of `{}`: {} bytes, {} files",
                    s.name, s.collection, s.bytes, s.files
                );
            }
            SnapshotCommand::List { collection, json } => {
                let list = c
                    .admin
                    .list_snapshots(pb::ListSnapshotsRequest {
                        collection: collection.unwrap_or_default(),
                    })
                    .await
                    .map_err(grpc)?
                    .into_inner()
                    .snapshots;
                if json {
                    let rows: Vec<_> = list
                        .iter()
                        .map(|s| {
                            serde_json::json!({
                                "collection": s.collection, "name": s.name, "bytes": s.bytes
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else if list.is_empty() {
                    println!("no snapshots");
                } else {
                    println!("{:<20}  {:>12}  name", "collection", "bytes");
                    for s in list {
                        println!("{:<20}  {:>12}  {}", s.collection, s.bytes, s.name);
                    }
                }
            }
            SnapshotCommand::Restore {
                collection,
                name,
                target,
            } => {
                let info = c
                    .admin
                    .restore_snapshot(pb::RestoreSnapshotRequest {
                        collection,
                        name,
                        target,
                    })
                    .await
                    .map_err(grpc)?
                    .into_inner();
                println!("restored as `{}`", info.name);
                print_info(&info);
            }
        }
        Ok(())
    })
}

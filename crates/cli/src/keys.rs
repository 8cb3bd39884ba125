//! `earshot keys`: create, list and revoke the API keys kept in the transcript store.
//!
//! `create` prints the new key on stdout, one line and nothing else, so that scripts can take
//! it with `$(earshot keys create ...)`; every other message goes to stderr.

use anyhow::Context;
use clap::Subcommand;
use earshot_gateway::auth::{self, Scope};
use earshot_store::{ApiKeyRecord, StoreError, now_ms};

use crate::StoreArgs;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it. It is shown this once: only its hash is kept.
    Create {
        /// A unique name for the key (letters, digits, '.', '_', '-'; at most 64).
        #[arg(long)]
        name: String,
        /// What the key may do: stream, read, admin (repeatable; default: stream and read).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<Scope>,
        /// Concurrent sessions the key may hold (default: no limit of its own).
        #[arg(long)]
        max_sessions: Option<u32>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the keys: name, scopes, limit, created, last used (never the key).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by name.
    Revoke {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            scopes,
            max_sessions,
            store,
        } => {
            let new = auth::new_key(&name, &scopes, max_sessions, now_ms())?;
            let store = store.open().await?;
            match store.create_key(&new.record).await {
                Err(StoreError::KeyExists { name }) => anyhow::bail!(
                    "a key named {name:?} exists already (revoke it first, or choose another name)"
                ),
                other => other.context("cannot store the key")?,
            }
            eprintln!(
                "created key {name:?} with scopes {}; it is shown only now",
                new.record.scopes.join(", ")
            );
            println!("{}", new.key);
        }
        KeysCommand::List { store } => {
            let store = store.open().await?;
            let keys = store.list_keys().await.context("cannot list the keys")?;
            if keys.is_empty() {
                eprintln!("no keys");
            } else {
                println!("{}", format_table(&keys));
            }
        }
        KeysCommand::Revoke { name, store } => {
            let store = store.open().await?;
            if !store
                .revoke_key(&name)
                .await
                .context("cannot revoke the key")?
            {
                anyhow::bail!("no key named {name:?}");
            }
            eprintln!("revoked key {name:?}");
        }
    }
    Ok(())
}

/// One line per key, columns separated by at least two spaces; times in UTC, RFC 3339.
fn format_table(keys: &[ApiKeyRecord]) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "SCOPES".to_owned(),
        "MAX_SESSIONS".to_owned(),
        "CREATED".to_owned(),
        "LAST_USED".to_owned(),
    ]];
    for key in keys {
        rows.push([
            key.name.clone(),
            key.scopes.join(","),
            key.max_sessions
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            format_time(key.created_at_ms),
            key.last_used_ms
                .map_or_else(|| "never".to_owned(), format_time),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn format_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_names_scopes_and_times_but_no_hash() {
        let keys = [ApiKeyRecord {
            name: "laptop".into(),
            key_hash: "ab".repeat(32),
            scopes: vec!["stream".into(), "read".into()],
            max_sessions: Some(3),
            created_at_ms: 1_764_000_000_000,
            last_used_ms: None,
        }];
        let table = format_table(&keys);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "NAME    SCOPES       MAX_SESSIONS  CREATED               LAST_USED"
        );
        assert_eq!(
            lines[1],
            "laptop  stream,read  3             2025-11-24T16:00:00Z  never"
        );
        assert!(!table.contains(&keys[0].key_hash));
    }
}

//! `strata ae …`: the peer table, from the command line.

use crate::cli::AeCommand;
use crate::serve::{open_index, runtime};
use anyhow::{bail, Context};
use archive_core::config::{check_ae_title, Config};
use archive_core::model::AePeer;

pub fn run(config: Config, command: AeCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let index = open_index(&config).await?;
        match command {
            AeCommand::Add {
                title: ae_title,
                host,
                port,
                no_query,
                no_retrieve,
                no_store,
                tls,
                description,
            } => {
                if let Err(message) = check_ae_title(&ae_title) {
                    bail!("AE title {message}");
                }
                if host.trim().is_empty() || port == 0 {
                    bail!("host must not be empty and port must be 1-65535");
                }
                let peer = AePeer {
                    ae_title: ae_title.trim().to_string(),
                    host,
                    port,
                    can_query: !no_query,
                    can_retrieve: !no_retrieve,
                    can_store: !no_store,
                    description,
                    tls,
                };
                index
                    .ae_upsert(&peer)
                    .await
                    .context("cannot save the peer")?;
                println!("saved {} ({}:{})", peer.ae_title, peer.host, peer.port);
            }
            AeCommand::List => {
                let peers = index.ae_list().await.context("cannot list peers")?;
                println!(
                    "{:<16} {:<24} {:>5}  query retrieve store tls  description",
                    "AE title", "host", "port"
                );
                for peer in peers {
                    let yes = |b: bool| if b { "yes" } else { "no" };
                    println!(
                        "{:<16} {:<24} {:>5}  {:<5} {:<8} {:<5} {:<3}  {}",
                        peer.ae_title,
                        peer.host,
                        peer.port,
                        yes(peer.can_query),
                        yes(peer.can_retrieve),
                        yes(peer.can_store),
                        yes(peer.tls),
                        peer.description
                    );
                }
            }
            AeCommand::Remove { title: ae_title } => {
                if !index
                    .ae_remove(ae_title.trim())
                    .await
                    .context("cannot remove the peer")?
                {
                    bail!("no peer with AE title {ae_title}");
                }
                println!("removed {ae_title}");
            }
        }
        Ok(())
    })
}

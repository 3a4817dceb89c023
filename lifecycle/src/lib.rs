//! The scheduled lifecycle services: copy rules, retention rules, verify-sync and scavenging
//! create jobs on their cron schedules, and workers on every node claim and run jobs from the
//! shared jobs table (`jobs/`: one file per kind of job).
//!
//! Nothing here knows S3 or tar: targets come from the [`TargetFactory`] the binary passes in.

mod jobs;
pub mod rebuild;
mod scheduler;
mod settings;
mod worker;

// Job creation lives in archive-core (actions): the REST API and the CLI queue jobs too.
pub use archive_core::actions::queue_job;
pub use settings::Settings;

use archive_core::accept::Acceptor;
use archive_core::audit::Auditor;
use archive_core::index::Index;
use archive_core::jobs::{HandBack, JobType};
use archive_core::nearline::TargetCache;
use archive_core::retrieve::Retriever;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What every service and worker of this node shares.
pub(crate) struct Services {
    pub index: Index,
    pub targets: Arc<TargetCache>,
    /// Reads NEARLINE packs through the retrieve cache (restore).
    pub retriever: Retriever,
    /// The accept path restored instances go through.
    pub acceptor: Acceptor,
    /// Deletions and restores are recorded here.
    pub auditor: Auditor,
    pub settings: Settings,
}

/// The running lifecycle services of this node.
pub struct Lifecycle {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    services: Arc<Services>,
}

impl Lifecycle {
    /// Starts the scheduler and `settings.workers` job workers. Jobs this node was running
    /// when it last stopped (a crash, kill -9) go back to the queue first.
    pub async fn start(
        index: Index,
        targets: Arc<TargetCache>,
        retriever: Retriever,
        acceptor: Acceptor,
        auditor: Auditor,
        settings: Settings,
    ) -> archive_core::index::IndexResult<Lifecycle> {
        let now = archive_core::index::now_millis();
        let requeued = index
            .requeue_jobs_of_node(&settings.node_id, now, HandBack::AfterCrash)
            .await?;
        if requeued > 0 {
            tracing::info!(
                jobs = requeued,
                node = %settings.node_id,
                "requeued jobs this node was running when it stopped"
            );
        }
        // Deletions a crash interrupted after their first step finish first.
        for study in index.studies_with_deleting_files().await? {
            let attempts = settings.max_attempts;
            queue_job(&index, JobType::Delete, &study, "", "resume", attempts).await?;
        }
        let services = Arc::new(Services {
            targets,
            retriever,
            acceptor,
            auditor,
            index,
            settings,
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(scheduler::run(services.clone(), stopped.clone()));
        for number in 0..services.settings.workers {
            tasks.spawn(worker::run(services.clone(), number, stopped.clone()));
        }
        Ok(Lifecycle {
            stop,
            tasks,
            services,
        })
    }

    /// Stops claiming work, abandons running jobs, and hands them back to the queue so any
    /// node (this one after a restart included) picks them up at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let services = &self.services;
        let now = archive_core::index::now_millis();
        match services
            .index
            .requeue_jobs_of_node(&services.settings.node_id, now, HandBack::Shutdown)
            .await
        {
            Ok(0) => {}
            Ok(jobs) => tracing::info!(jobs, "handed running jobs back to the queue"),
            Err(error) => {
                tracing::warn!(%error, "cannot requeue running jobs; their leases will expire")
            }
        }
    }
}

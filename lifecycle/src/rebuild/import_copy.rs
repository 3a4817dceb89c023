//! `strata import --copy DIR`: another archive's ONLINE tree copied into Strata's own ONLINE
//! storage, each file through the same accept path as a C-STORE (spooled, parsed, laid out,
//! made durable, indexed), so the old disks can be retired afterwards. The source is only
//! read.

use super::import::every_file;
use super::{Progress, RebuildError, RebuildOptions, RebuildReport};
use archive_core::accept::{AcceptedAs, Acceptor, Arrival, Refusal};
use archive_core::online::sweep::FoundFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Recorded as the source of every imported instance (where a C-STORE records the calling AE).
pub const IMPORT_SOURCE: &str = "import";

/// What became of one file.
enum Copied {
    Stored,
    /// The instance was stored already (a rerun, or a copy received meanwhile).
    AlreadyStored,
    /// Not stored, with why (the file stays where it is).
    Refused(String),
}

/// Copies every file below `dir` into ONLINE storage through `acceptor` (`parallel` at a
/// time). Run again, every instance is already stored and nothing changes. Stops early only
/// when storage or the index fails (full, unwritable, unreachable): a rerun continues.
pub async fn import_copy(
    acceptor: &Acceptor,
    dir: &Path,
    options: &RebuildOptions,
    progress: &Progress,
) -> Result<RebuildReport, RebuildError> {
    let root = dir
        .canonicalize()
        .map_err(|e| RebuildError::Io(format!("{}: {e}", dir.display())))?;
    let walk_root = root.clone();
    let files = tokio::task::spawn_blocking(move || every_file(&walk_root))
        .await
        .map_err(|e| RebuildError::Io(format!("the walk stopped: {e}")))?
        .map_err(|e| RebuildError::Io(format!("cannot list {}: {e}", root.display())))?;
    progress.begin(
        format!("import --copy {}", root.display()),
        files.len() as u64,
        files.iter().map(|f| f.size).sum(),
    );
    let parallel = Arc::new(Semaphore::new(options.parallel.max(1)));
    let mut report = RebuildReport::default();
    let mut tasks = JoinSet::new();
    let mut failed = None;
    for file in files {
        let permit = parallel.clone().acquire_owned().await;
        let acceptor = acceptor.clone();
        let path = root.join(&file.rel_path);
        tasks.spawn(async move {
            let _permit = permit;
            let copied = copy_one(&acceptor, &path).await;
            (file, path, copied)
        });
        // Results as they come, so a failing store stops the import soon.
        while let Some(joined) = tasks.try_join_next() {
            if let Err(error) = take(joined, progress, &mut report) {
                failed.get_or_insert(error);
            }
        }
        if failed.is_some() {
            break;
        }
    }
    // Copies under way finish (never cut between laying out a file and indexing it).
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = take(joined, progress, &mut report) {
            failed.get_or_insert(error);
        }
    }
    if let Some(error) = failed {
        return Err(error);
    }
    progress.finish();
    Ok(report)
}

type Joined = Result<(FoundFile, PathBuf, Result<Copied, RebuildError>), tokio::task::JoinError>;

fn take(
    joined: Joined,
    progress: &Progress,
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    let (file, path, copied) =
        joined.map_err(|e| RebuildError::Io(format!("a copy stopped: {e}")))?;
    progress.done(1, file.size);
    match copied? {
        Copied::Stored => report.files_indexed += 1,
        Copied::AlreadyStored => report.files_already_indexed += 1,
        Copied::Refused(why) => report
            .problems
            .push(format!("{}: not imported: {why}", path.display())),
    }
    Ok(())
}

async fn copy_one(acceptor: &Acceptor, path: &Path) -> Result<Copied, RebuildError> {
    let mut source = match tokio::fs::File::open(path).await {
        Ok(source) => source,
        Err(error) => return Ok(Copied::Refused(format!("cannot open: {error}"))),
    };
    let mut spooled = acceptor.begin().map_err(storage_failed)?;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = match source.read(&mut buffer).await {
            Ok(n) => n,
            Err(error) => return Ok(Copied::Refused(format!("cannot read: {error}"))),
        };
        if n == 0 {
            break;
        }
        spooled.write(&buffer[..n]).await.map_err(storage_failed)?;
    }
    let arrival = Arrival {
        source: IMPORT_SOURCE,
        ..Arrival::default()
    };
    match acceptor.accept(spooled, arrival).await {
        Ok(accepted) => Ok(match accepted.outcome {
            AcceptedAs::Stored | AcceptedAs::Replaced => Copied::Stored,
            AcceptedAs::DuplicateKept => Copied::AlreadyStored,
        }),
        Err(refused) if refused.reason.is_transient() => Err(storage_failed(refused.reason)),
        Err(refused) => Ok(Copied::Refused(refused.reason.to_string())),
    }
}

/// Storage or the index failed: every further file would fail the same way.
fn storage_failed(reason: Refusal) -> RebuildError {
    RebuildError::Io(format!("cannot store: {reason}"))
}

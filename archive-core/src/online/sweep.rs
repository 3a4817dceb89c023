//! What a scavenge needs to know about an ONLINE filesystem's layout: the spool holds only
//! transfers under way (`.part` files), and stored objects are the files whose path has the
//! layout's shape (`YYYY/MM/DD/<hash>/<hash>/<hash>.dcm`). Nothing else below a root is ever a
//! candidate, so another filesystem nested in this one, a data directory or an admin's file is
//! left alone.

use super::layout::is_object_path;
use super::INCOMING_DIR;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A file under a filesystem root, outside the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFile {
    /// Relative to the root, `/`-separated: what the index's `file.path` holds.
    pub rel_path: String,
    pub size: u64,
}

/// Removes spool files not modified since `older_than` (transfers that will never finish:
/// their process died). Returns how many were removed and their bytes.
pub fn sweep_spool(root: &Path, older_than: SystemTime) -> std::io::Result<(u64, u64)> {
    let spool = root.join(INCOMING_DIR);
    let entries = match std::fs::read_dir(&spool) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(error) => return Err(error),
    };
    let (mut files, mut bytes) = (0, 0);
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || !is_older(&meta, older_than) {
            continue;
        }
        if std::fs::remove_file(entry.path()).is_ok() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

/// What a walk could not read (a directory it may not list): skipped, counted, not fatal.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WalkReport {
    pub unreadable_dirs: u64,
}

/// Walks the stored objects under `root` (files with the layout's path shape, the spool
/// excluded), handing over batches of those not modified since `older_than`. Stops early when
/// `batch` returns `false`. A directory that cannot be listed is skipped and counted.
pub fn walk_objects(
    root: &Path,
    older_than: SystemTime,
    batch_size: usize,
    mut batch: impl FnMut(Vec<FoundFile>) -> bool,
) -> WalkReport {
    let mut report = WalkReport::default();
    let mut pending: Vec<(PathBuf, usize)> = vec![(root.to_path_buf(), 0)];
    let mut found = Vec::with_capacity(batch_size);
    while let Some((dir, depth)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A directory removed meanwhile (a study deleted) is not an error.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "scavenge: cannot list a directory; skipped");
                report.unreadable_dirs += 1;
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                // Objects sit five directories down (YYYY/MM/DD/study/series); at the top only
                // year directories are entered, which keeps the spool, nested filesystems and
                // anything else an admin keeps there out of the walk.
                let name = entry.file_name();
                let year =
                    name.len() == 4 && name.to_string_lossy().bytes().all(|b| b.is_ascii_digit());
                if depth < 5 && (depth > 0 || year) {
                    pending.push((path, depth + 1));
                }
                continue;
            }
            if !file_type.is_file() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !is_older(&meta, older_than) {
                continue;
            }
            let Some(rel_path) = relative(root, &path).filter(|p| is_object_path(p)) else {
                continue;
            };
            found.push(FoundFile {
                rel_path,
                size: meta.len(),
            });
            if found.len() >= batch_size && !batch(std::mem::take(&mut found)) {
                return report;
            }
        }
    }
    if !found.is_empty() {
        batch(found);
    }
    report
}

/// The day directories (`YYYY/MM/DD`) under `root`, in order: `rebuild-index` takes them one
/// at a time and checkpoints after each.
pub fn day_directories(root: &Path) -> std::io::Result<Vec<String>> {
    let numbered = |dir: &Path, width: usize| -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(error) => return Err(error),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == width
                && name.bytes().all(|b| b.is_ascii_digit())
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    };
    let mut days = Vec::new();
    for year in numbered(root, 4)? {
        for month in numbered(&root.join(&year), 2)? {
            for day in numbered(&root.join(&year).join(&month), 2)? {
                days.push(format!("{year}/{month}/{day}"));
            }
        }
    }
    Ok(days)
}

/// The stored objects of one day directory (see [`day_directories`]), in path order.
pub fn objects_of_day(root: &Path, day: &str) -> std::io::Result<Vec<FoundFile>> {
    let mut found = Vec::new();
    let mut pending = vec![root.join(day)];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                pending.push(path);
                continue;
            }
            let Some(rel_path) = relative(root, &path).filter(|p| is_object_path(p)) else {
                continue;
            };
            if let Ok(meta) = entry.metadata() {
                found.push(FoundFile {
                    rel_path,
                    size: meta.len(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    Ok(found)
}

fn is_older(meta: &std::fs::Metadata, older_than: SystemTime) -> bool {
    meta.modified().is_ok_and(|modified| modified <= older_than)
}

/// `a/b/c.dcm` for `<root>/a/b/c.dcm`; `None` for names that are not UTF-8 (the index
/// never writes such names, and they are reported by path only in the log at debug level).
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rest.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn age(path: &Path, by: Duration) {
        let file = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        file.set_modified(SystemTime::now() - by).expect("mtime");
    }

    #[test]
    fn old_spool_files_go_and_objects_are_walked_without_the_spool() {
        let root = tempfile::tempdir().expect("tempdir");
        let spool = root.path().join(INCOMING_DIR);
        std::fs::create_dir_all(&spool).expect("mkdir");
        let series = root.path().join("2026/01/02/aaaaaaaaaaaa/bbbbbbbbbbbb");
        std::fs::create_dir_all(&series).expect("mkdir");
        std::fs::create_dir_all(root.path().join("disk2/2026")).expect("mkdir");
        for (path, old) in [
            (spool.join("1-1.part"), true),
            (spool.join("1-2.part"), false),
            (series.join("cccccccccccccccccccc.dcm"), true),
            (series.join("dddddddddddddddddddd.dcm"), false),
            (series.join("notes.txt"), true),
            (root.path().join("index.db"), true),
            (root.path().join("disk2/2026/x.dcm"), true),
        ] {
            std::fs::write(&path, b"0123456789").expect("write");
            if old {
                age(&path, Duration::from_secs(7200));
            }
        }
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let mut walked = Vec::new();
        let report = walk_objects(root.path(), hour_ago, 1, |batch| {
            walked.extend(batch);
            true
        });
        assert_eq!(report, WalkReport::default());
        assert_eq!(
            walked,
            vec![FoundFile {
                rel_path: "2026/01/02/aaaaaaaaaaaa/bbbbbbbbbbbb/cccccccccccccccccccc.dcm".into(),
                size: 10
            }],
            "young files, the spool, and files outside the layout are not walked"
        );
        assert_eq!(sweep_spool(root.path(), hour_ago).expect("sweep"), (1, 10));
        // rebuild-index's view: day directories in order, and every object of a day.
        assert_eq!(
            day_directories(root.path()).expect("days"),
            vec!["2026/01/02".to_string()]
        );
        assert_eq!(
            objects_of_day(root.path(), "2026/01/02")
                .expect("objects")
                .iter()
                .map(|f| f.rel_path.rsplit('/').next().unwrap_or(""))
                .collect::<Vec<_>>(),
            vec!["cccccccccccccccccccc.dcm", "dddddddddddddddddddd.dcm"]
        );
        assert!(!spool.join("1-1.part").exists());
        assert!(
            spool.join("1-2.part").exists(),
            "a transfer under way stays"
        );
    }
}

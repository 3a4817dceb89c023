//! The cache's own rules, with fetches that write files (the targets have their own tests).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

type Fetched = Result<(), std::io::Error>;

fn failure(message: &str) -> Fetched {
    Err(std::io::Error::other(message.to_string()))
}

async fn write_pack(dir: PathBuf, ready: MemberReady, bytes: usize) -> Fetched {
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("m.dcm"), vec![7u8; bytes])?;
    ready("m.dcm");
    Ok(())
}

fn message(result: Result<impl Sized, CacheError>) -> Result<(), String> {
    result.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_fetch_fails_its_waiters_and_can_be_retried() {
    let root = tempfile::tempdir().expect("tempdir");
    let cache = RetrieveCache::open(root.path().join("cache"), 1000).expect("cache");
    // Fails without announcing the member: the waiter must see the error, not wait on.
    let failed = tokio::time::timeout(
        Duration::from_secs(5),
        cache.get_member(9, 100, "m.dcm", |_, _| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            failure("target down")
        }),
    )
    .await
    .expect("no hang");
    assert!(
        matches!(failed, Err(CacheError::Fetch(ref m)) if m.to_string() == "target down"),
        "{:?}",
        message(failed)
    );
    assert_eq!(cache.used(), 0, "nothing stays reserved");
    let again = tokio::time::timeout(
        Duration::from_secs(5),
        cache.get_member(9, 100, "m.dcm", |dir, ready| write_pack(dir, ready, 10)),
    )
    .await
    .expect("no hang");
    assert!(again.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_is_served_while_the_rest_of_its_pack_arrives() {
    let root = tempfile::tempdir().expect("tempdir");
    let cache = RetrieveCache::open(root.path().join("cache"), 1000).expect("cache");
    let started = Instant::now();
    let (pin, path) = cache
        .get_member(7, 100, "s/first.dcm", |dir, ready| async move {
            std::fs::create_dir_all(dir.join("s"))?;
            std::fs::write(dir.join("s/first.dcm"), b"first")?;
            ready("s/first.dcm");
            tokio::time::sleep(Duration::from_millis(500)).await;
            std::fs::write(dir.join("s/second.dcm"), b"second")?;
            ready("s/second.dcm");
            Fetched::Ok(())
        })
        .await
        .expect("member");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "did not wait for the whole pack"
    );
    assert_eq!(std::fs::read(&path).expect("read"), b"first");
    // A whole-pack request waits for the end, then finds the pack in place.
    let whole = cache
        .get(7, 100, |_, _| async { failure("must not fetch twice") })
        .await
        .expect("pack");
    assert_eq!(
        std::fs::read(whole.dir().join("s/second.dcm")).expect("read"),
        b"second"
    );
    drop(pin);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_fetch_for_many_requests_and_lru_eviction_under_the_cap() {
    let root = tempfile::tempdir().expect("tempdir");
    let cache = RetrieveCache::open(root.path().join("cache"), 250).expect("cache");
    let fetches = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    for _ in 0..10 {
        let cache = cache.clone();
        let fetches = fetches.clone();
        waiters.push(tokio::spawn(async move {
            cache
                .get(1, 100, move |dir, ready| {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    write_pack(dir, ready, 100)
                })
                .await
                .map(|pin| pin.dir().join("m.dcm").exists())
                .map_err(|e| e.to_string())
        }));
    }
    for waiter in waiters {
        assert_eq!(waiter.await.expect("join"), Ok(true));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "single flight");

    // Pack 2 fits beside 1; pack 3 needs room: the least recently used unpinned one goes.
    let two = cache
        .get(2, 100, |dir, ready| write_pack(dir, ready, 100))
        .await
        .expect("two");
    let three = cache
        .get(3, 100, |dir, ready| write_pack(dir, ready, 100))
        .await
        .expect("three");
    assert!(cache.used() <= cache.cap());
    assert!(!root.path().join("cache/1").exists(), "pack 1 evicted");
    assert!(
        two.dir().exists() && three.dir().exists(),
        "pinned packs stay"
    );

    // Everything pinned: a fetch waits for room instead of going over the cap.
    let cache2 = cache.clone();
    let blocked = tokio::spawn(async move {
        cache2
            .get(4, 100, |dir, ready| write_pack(dir, ready, 100))
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !blocked.is_finished(),
        "waits while every pack is being read"
    );
    drop(two);
    assert_eq!(
        blocked.await.expect("join").map_err(|e| e.to_string()),
        Ok(())
    );
    assert!(cache.used() <= cache.cap());

    // A failed fetch reports its error to every waiter and can be retried.
    let failed = cache.get(5, 10, |_, _| async { failure("S3 down") }).await;
    assert!(matches!(failed, Err(CacheError::Fetch(m)) if m.to_string() == "S3 down"));
    assert!(cache
        .get(5, 10, |dir, ready| write_pack(dir, ready, 10))
        .await
        .is_ok());
    assert!(matches!(
        cache
            .get(6, 1000, |dir, ready| write_pack(dir, ready, 1))
            .await,
        Err(CacheError::TooLarge { .. })
    ));
    drop(three);
}

#[tokio::test(flavor = "multi_thread")]
async fn leftovers_no_pack_claims_are_removed_and_packs_stay() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("cache");
    let cache = RetrieveCache::open(dir.clone(), 1000).expect("cache");
    let pin = cache
        .get(1, 100, |d, ready| write_pack(d, ready, 10))
        .await
        .expect("pack");
    std::fs::create_dir_all(dir.join("77/s")).expect("mkdir");
    std::fs::create_dir_all(dir.join("1.partial")).expect("mkdir");
    std::fs::write(dir.join("junk"), b"x").expect("write");
    assert_eq!(cache.remove_leftovers().expect("sweep"), 3);
    assert!(pin.dir().join("m.dcm").exists(), "the cached pack stays");
    assert!(!dir.join("77").exists() && !dir.join("1.partial").exists());
}

//! Packs on a filesystem target: written, read back, ranges, damage and bad sources.

use archive_core::nearline::{
    ExpectedPack, NearlineErrorKind, NearlineTarget, PackMemberRow, PackRequest, PackSource,
    TransferProgress, VerifyOutcome,
};
use hsm_s3::FilesystemTarget;
use sha2::{Digest, Sha256};
use std::sync::Arc;

fn source(dir: &std::path::Path, n: usize, len: usize) -> PackSource {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + n) as u8).collect();
    let path = dir.join(format!("f{n}.dcm"));
    std::fs::write(&path, &bytes).expect("write source");
    // UIDs of the maximum length: member paths longer than a plain ustar name (100).
    let series_uid = format!("1.2.{}", "9".repeat(60));
    let sop_uid = format!("1.3.{n}.{}", "8".repeat(58));
    PackSource {
        instance_id: n as i64,
        sop_uid,
        series_uid,
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        file_path: path,
        size: len as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        received_at: 1_700_000_000_000 + n as i64,
    }
}

fn expected(
    key: &str,
    request: &PackRequest,
    receipt: &archive_core::nearline::PackReceipt,
) -> ExpectedPack {
    ExpectedPack {
        key: key.into(),
        size: receipt.size,
        sha256: receipt.sha256.clone(),
        members: request
            .members
            .iter()
            .zip(&receipt.placements)
            .map(|(m, p)| PackMemberRow {
                sop_uid: m.sop_uid.clone(),
                member_path: p.member_path.clone(),
                data_offset: p.data_offset as i64,
                size_bytes: p.size as i64,
                sha256: m.sha256.clone(),
                blake3: p.blake3.clone(),
            })
            .collect(),
    }
}

/// What rebuild-index reads of a pack (listing, manifest by range, computed offsets) is
/// what the upload recorded.
async fn assert_contents_match(
    target: &FilesystemTarget,
    request: &PackRequest,
    receipt: &archive_core::nearline::PackReceipt,
) {
    let listed = target.list_packs().await.expect("list");
    assert_eq!(
        listed,
        vec![archive_core::nearline::ListedPack {
            key: request.key.clone(),
            size: receipt.size
        }]
    );
    let contents = target
        .read_contents(&request.key, receipt.size)
        .await
        .expect("contents");
    assert_eq!(contents.study_uid, request.study_uid);
    assert_eq!(contents.members.len(), request.members.len());
    for ((found, placed), source) in contents
        .members
        .iter()
        .zip(&receipt.placements)
        .zip(&request.members)
    {
        assert_eq!(found.member_path, placed.member_path);
        assert_eq!(found.data_offset, placed.data_offset);
        assert_eq!(found.size, placed.size);
        assert_eq!(found.sha256, source.sha256);
        assert_eq!(found.sop_uid, source.sop_uid);
        assert_eq!(found.series_uid, source.series_uid);
        assert_eq!(found.received_at, Some(source.received_at));
    }
    // A size that does not match the layout is refused, not indexed with wrong offsets.
    assert!(target
        .read_contents(&request.key, receipt.size + 512)
        .await
        .is_err());
}

#[tokio::test]
async fn a_manifest_longer_than_the_first_read_is_read_whole() {
    let sources = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    // About 500 bytes of manifest per member: 300 members need more than the 64 KiB head.
    let members: Vec<PackSource> = (0..300)
        .map(|n| source(sources.path(), n, 100 + n))
        .collect();
    let request = PackRequest {
        key: "1.2.4/pack-1.tar".into(),
        study_uid: "1.2.4".into(),
        members,
    };
    let target = FilesystemTarget::new(root.path().to_path_buf());
    let receipt = target
        .upload_pack(request.clone(), Arc::new(TransferProgress::default()))
        .await
        .expect("upload");
    // An unfinished upload is not a pack.
    std::fs::write(root.path().join("1.2.4/pack-2.tar.partial"), b"half").expect("partial");
    assert_contents_match(&target, &request, &receipt).await;
}

#[tokio::test]
async fn pack_round_trip_ranges_and_damage() {
    let sources = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let members: Vec<PackSource> = [0usize, 1, 511, 512, 513, 70_000]
        .iter()
        .enumerate()
        .map(|(n, len)| source(sources.path(), n, *len))
        .collect();
    let request = PackRequest {
        key: "1.2.3/pack-1.tar".into(),
        study_uid: "1.2.3".into(),
        members: members.clone(),
    };
    let target = FilesystemTarget::new(root.path().to_path_buf());
    let progress = Arc::new(TransferProgress::default());
    let receipt = target
        .upload_pack(request.clone(), progress.clone())
        .await
        .expect("upload");
    assert_eq!(progress.items(), members.len() as u64);
    let tar_path = root.path().join("1.2.3/pack-1.tar");
    let on_disk = std::fs::read(&tar_path).expect("pack exists");
    assert_eq!(on_disk.len() as u64, receipt.size);
    assert_eq!(hex::encode(Sha256::digest(&on_disk)), receipt.sha256);

    // Every recorded range is exactly the member's bytes.
    for (member, placement) in members.iter().zip(&receipt.placements) {
        let original = std::fs::read(&member.file_path).expect("source");
        let ranged = target
            .read_range(&request.key, placement.data_offset, placement.size)
            .await
            .expect("range");
        assert_eq!(ranged, original, "{}", path_of(member));
    }

    // An independent tar reader sees the manifest first, then the members in order.
    let mut archive = tar::Archive::new(on_disk.as_slice());
    let names: Vec<String> = archive
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(names[0], "MANIFEST.json");
    assert_eq!(
        names[1..],
        members.iter().map(path_of).collect::<Vec<_>>()[..]
    );

    let wanted = expected(&request.key, &request, &receipt);
    let outcome = target
        .verify_pack(&wanted, Arc::new(TransferProgress::default()))
        .await
        .expect("verify");
    assert_eq!(outcome, VerifyOutcome::Intact);
    assert_contents_match(&target, &request, &receipt).await;
    // rebuild-index does not know a found pack's whole checksum: the members still decide.
    let mut unknown_sum = wanted.clone();
    unknown_sum.sha256.clear();
    assert_eq!(
        target
            .verify_pack(&unknown_sum, Arc::new(TransferProgress::default()))
            .await
            .expect("verify"),
        VerifyOutcome::Intact
    );

    // Each member's BLAKE3 is recorded as written; retrieval unpacks with it, and packs from
    // before it was recorded (empty) unpack with SHA-256.
    for (member, placement) in members.iter().zip(&receipt.placements) {
        let bytes = std::fs::read(&member.file_path).expect("source");
        assert_eq!(placement.blake3, blake3::hash(&bytes).to_hex().to_string());
        // The pack format names members `<series>/<sop>.dcm`; the index records the name.
        assert_eq!(
            placement.member_path,
            format!("{}/{}.dcm", member.series_uid, member.sop_uid)
        );
    }
    let mut older = wanted.clone();
    for member in &mut older.members {
        member.blake3.clear();
    }
    for (name, pack) in [("blake3", &wanted), ("sha256", &older)] {
        let dir = root.path().join(format!("unpacked-{name}"));
        let (ready, announced) = announcer();
        target
            .unpack_pack(pack, &dir, Arc::new(TransferProgress::default()), ready)
            .await
            .expect("unpack");
        let wanted_paths: Vec<String> = members.iter().map(path_of).collect();
        assert_eq!(
            *announced.lock().expect("lock"),
            wanted_paths,
            "each member announced once it is in place, in pack order"
        );
        for member in &members {
            assert_eq!(
                std::fs::read(dir.join(path_of(member))).expect("unpacked"),
                std::fs::read(&member.file_path).expect("source"),
                "{name}"
            );
        }
    }

    // One flipped byte inside the last member: damaged, and the message names the member.
    let mut damaged = on_disk.clone();
    let last = receipt.placements.last().expect("members");
    damaged[(last.data_offset + 100) as usize] ^= 0xff;
    std::fs::write(&tar_path, &damaged).expect("damage");
    match target
        .verify_pack(&wanted, Arc::new(TransferProgress::default()))
        .await
        .expect("verify")
    {
        VerifyOutcome::Damaged(problems) => {
            assert!(
                problems.iter().any(|p| p.contains(&path_of(&members[5]))),
                "{problems:?}"
            );
        }
        VerifyOutcome::Intact => panic!("a damaged pack verified"),
    }
    // Unpacking the damaged pack fails on the BLAKE3 check and leaves that member unserved.
    let dir = root.path().join("unpacked-damaged");
    let (ready, announced) = announcer();
    let error = target
        .unpack_pack(&wanted, &dir, Arc::new(TransferProgress::default()), ready)
        .await
        .expect_err("a damaged pack must not unpack");
    assert!(
        !announced
            .lock()
            .expect("lock")
            .contains(&path_of(&members[5])),
        "a member that failed its check is never announced"
    );
    assert!(
        error.message.contains("BLAKE3") && error.message.contains(&path_of(&members[5])),
        "{error}"
    );
    assert!(!dir.join(path_of(&members[5])).exists());

    // A missing pack is damaged too, not an outage.
    target.discard(&request.key).await.expect("discard");
    assert!(!tar_path.exists());
    assert!(matches!(
        target
            .verify_pack(&wanted, Arc::new(TransferProgress::default()))
            .await,
        Ok(VerifyOutcome::Damaged(_))
    ));
}

#[tokio::test]
async fn a_source_that_disagrees_with_the_index_is_not_packed() {
    let sources = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let mut member = source(sources.path(), 1, 4096);
    member.sha256 = "0".repeat(64);
    let request = PackRequest {
        key: "s/pack.tar".into(),
        study_uid: "s".into(),
        members: vec![member],
    };
    let target = FilesystemTarget::new(root.path().to_path_buf());
    let error = target
        .upload_pack(request, Arc::new(TransferProgress::default()))
        .await
        .expect_err("must refuse");
    assert_eq!(error.kind, NearlineErrorKind::SourceMismatch, "{error}");
    assert!(error.message.contains("damaged"), "{error}");
    assert!(!root.path().join("s/pack.tar").exists());
    assert!(!root.path().join("s/pack.tar.partial").exists());
}

/// A `ready` callback that records what it was told.
fn announcer() -> (
    archive_core::retrieve_cache::MemberReady,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let announced = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = announced.clone();
    let ready: archive_core::retrieve_cache::MemberReady = Arc::new(move |path: &str| {
        if let Ok(mut list) = sink.lock() {
            list.push(path.to_string());
        }
    });
    (ready, announced)
}

/// Where the pack format puts a member: `<series>/<sop>.dcm` (hsm-s3 decides, the index
/// records what the receipt says).
fn path_of(member: &PackSource) -> String {
    hsm_s3::manifest::member_path(&member.series_uid, &member.sop_uid)
}

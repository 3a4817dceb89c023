//! dcm4chee 2.x HSM tars on a filesystem target: read member by member against the MD5SUM
//! entry (a damaged member rejected, the others placed at their true offsets), then verified
//! and unpacked like Strata's packs with the rejected member left out of the index.

use archive_core::nearline::{
    ExpectedPack, NearlineTarget, PackFormat, PackMemberRow, TransferProgress, VerifyOutcome,
};
use hsm_s3::dcm4chee_tar::write_series_tar;
use hsm_s3::FilesystemTarget;
use sha2::{Digest, Sha256};
use std::sync::Arc;

const KEY: &str = "2012/3/4/5/1A2B3C4D/5E6F7A8B-367000.tar";

/// Three members of different sizes (one larger than a read window, 8 MiB, so it is hashed
/// in pieces), written as dcm4chee 2.x did; returns (entry name, bytes) of each.
fn write_tar(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let sources = root.join("sources");
    std::fs::create_dir_all(&sources).expect("mkdir");
    let mut members = Vec::new();
    let mut files = Vec::new();
    for (n, len) in [(1usize, 1000usize), (2, 9 << 20), (3, 513)] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + n) as u8).collect();
        let path = sources.join(n.to_string());
        std::fs::write(&path, &bytes).expect("write source");
        let name = format!("5E6F7A8B/{n:08X}");
        files.push((name.clone(), path));
        members.push((name, bytes));
    }
    write_series_tar(&root.join("hsm").join(KEY), &files, 1_330_837_567).expect("write tar");
    members
}

fn rows(contents: &archive_core::nearline::PackContents) -> Vec<PackMemberRow> {
    contents
        .members
        .iter()
        .map(|m| PackMemberRow {
            sop_uid: m.member_path.clone(),
            member_path: m.member_path.clone(),
            data_offset: m.data_offset as i64,
            size_bytes: m.size as i64,
            sha256: m.sha256.clone(),
            blake3: String::new(),
        })
        .collect()
}

#[tokio::test]
async fn members_are_checked_against_md5sum_and_served_like_packs() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let members = write_tar(scratch.path());
    let target = FilesystemTarget::new(scratch.path().join("hsm"));
    let listed = target.list_packs().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, KEY);
    let size = listed[0].size;

    let intact = target.read_contents(KEY, size).await.expect("contents");
    assert_eq!(intact.format, PackFormat::Dcm4chee2);
    assert!(intact.rejected.is_empty(), "{:?}", intact.rejected);
    assert_eq!(intact.created_at, 1_330_837_567_000);
    assert_eq!(intact.members.len(), 3);
    let tar_path = scratch.path().join("hsm").join(KEY);
    let tar = std::fs::read(&tar_path).expect("tar");
    for (member, (name, bytes)) in intact.members.iter().zip(&members) {
        assert_eq!(&member.member_path, name);
        assert_eq!(member.size, bytes.len() as u64);
        let at = member.data_offset as usize;
        assert_eq!(
            &tar[at..at + bytes.len()],
            &bytes[..],
            "{name} at its offset"
        );
        assert_eq!(member.sha256, hex::encode(Sha256::digest(bytes)));
    }

    // The first member damaged inside the tar: rejected with why, the others still good.
    let mut damaged = tar.clone();
    damaged[intact.members[0].data_offset as usize + 10] ^= 0xFF;
    std::fs::write(&tar_path, &damaged).expect("damage");
    let contents = target.read_contents(KEY, size).await.expect("contents");
    assert_eq!(contents.members.len(), 2);
    assert_eq!(contents.rejected.len(), 1, "{:?}", contents.rejected);
    assert!(
        contents.rejected[0].contains("5E6F7A8B/00000001") && contents.rejected[0].contains("MD5"),
        "{:?}",
        contents.rejected
    );

    // Indexed without the damaged member, the tar verifies and unpacks: the member left out
    // is passed over, the others are checked against their SHA-256.
    let expected = ExpectedPack {
        key: KEY.into(),
        size,
        sha256: String::new(),
        members: rows(&contents),
    };
    let outcome = target
        .verify_pack(&expected, Arc::new(TransferProgress::default()))
        .await
        .expect("verify");
    assert_eq!(outcome, VerifyOutcome::Intact);
    let unpacked = scratch.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).expect("mkdir");
    let ready: archive_core::retrieve_cache::MemberReady = Arc::new(|_: &str| {});
    target
        .unpack_pack(
            &expected,
            &unpacked,
            Arc::new(TransferProgress::default()),
            ready,
        )
        .await
        .expect("unpack");
    for (name, bytes) in &members[1..] {
        assert_eq!(&std::fs::read(unpacked.join(name)).expect("member"), bytes);
    }
    assert!(!unpacked.join(&members[0].0).exists());

    // A member damaged after it was indexed is found by the read-back.
    let mut later = damaged.clone();
    later[contents.members[1].data_offset as usize] ^= 0xFF;
    std::fs::write(&tar_path, &later).expect("damage");
    let outcome = target
        .verify_pack(&expected, Arc::new(TransferProgress::default()))
        .await
        .expect("verify");
    assert!(
        matches!(&outcome, VerifyOutcome::Damaged(p) if p.iter().any(|p| p.contains("00000003"))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_tar_without_md5sum_or_with_an_unsafe_entry_is_refused() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path().join("hsm");
    std::fs::create_dir_all(&root).expect("mkdir");
    let target = FilesystemTarget::new(root.clone());
    let write = |entries: &[(&[u8], &[u8])]| -> u64 {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_ustar();
            // Written into the name field as is: Header::set_path refuses `..`.
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        let bytes = builder.into_inner().expect("tar");
        std::fs::write(root.join("x.tar"), &bytes).expect("write");
        bytes.len() as u64
    };
    // Neither a manifest nor an MD5SUM first: not a pack either format knows.
    let size = write(&[
        (&b"README"[..], &b"data"[..]),
        (&b"5E6F7A8B/00000001"[..], &b"data"[..]),
    ]);
    let error = target
        .read_contents("x.tar", size)
        .await
        .expect_err("unknown");
    assert!(error.message.contains("MANIFEST.json"), "{}", error.message);
    // A member named to escape the directory it would be unpacked into.
    let listing = &b"8d777f385d3dfec8815d20f7496026dc  ../../etc/evil\n"[..];
    let size = write(&[
        (&b"MD5SUM"[..], listing),
        (&b"../../etc/evil"[..], &b"data"[..]),
    ]);
    let error = target
        .read_contents("x.tar", size)
        .await
        .expect_err("unsafe");
    assert!(
        error.message.contains("not a plain relative path"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_tar_with_a_bad_listing_is_refused() {
    let scratch = tempfile::tempdir().expect("tempdir");
    write_tar(scratch.path());
    let tar_path = scratch.path().join("hsm").join(KEY);
    let mut tar = std::fs::read(&tar_path).expect("tar");
    // The MD5SUM's first line made unreadable (its checksum header still matches).
    tar[512] = b'x';
    std::fs::write(&tar_path, &tar).expect("write");
    let target = FilesystemTarget::new(scratch.path().join("hsm"));
    let error = target
        .read_contents(KEY, tar.len() as u64)
        .await
        .expect_err("a bad listing");
    assert!(error.message.contains("MD5SUM line 1"), "{}", error.message);
}

//! An S3-compatible bucket as a NEARLINE target (AWS S3, MinIO, Ceph RGW, Garage, B2, …).
//!
//! Packs stream from the tar writer into parts uploaded a few at a time; small packs go up
//! in one PUT. Request checksums are only sent when the operation requires them: many
//! S3-compatible servers reject the SDK's newer default checksum headers.

use crate::body_reader::BodyReader;
use crate::chunk_sink::ChunkSink;
use crate::filesystem::CountedRead;
use crate::pack_verify::{unpack_pack_stream, verify_pack_stream};
use crate::pack_writer::write_pack;
use archive_core::config::TargetSpec;
use archive_core::index::now_millis;
use archive_core::nearline::{
    ExpectedPack, ListedPack, NearlineError, NearlineResult, NearlineTarget, PackContents,
    PackReceipt, PackRequest, TransferProgress, VerifyOutcome,
};
use archive_core::retrieve_cache::MemberReady;
use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use aws_sdk_s3::Client;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub struct S3Target {
    client: Client,
    bucket: String,
    prefix: String,
    storage_class: Option<StorageClass>,
    part_size: usize,
    concurrency: usize,
}

fn sdk_error(context: &str, error: impl std::error::Error) -> NearlineError {
    NearlineError::unavailable(format!("{context}: {}", DisplayErrorContext(error)))
}

/// Reads a credential from a file (a Docker or Kubernetes secret), trimming the newline.
fn read_secret_file(path: &std::path::Path, what: &str) -> NearlineResult<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        NearlineError::invalid(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })?;
    let value = text.trim().to_string();
    if value.is_empty() {
        return Err(NearlineError::invalid(format!(
            "the {what} file {} is empty",
            path.display()
        )));
    }
    Ok(value)
}

impl S3Target {
    pub async fn open(spec: &TargetSpec) -> NearlineResult<S3Target> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(spec.region.clone()));
        if let (Some(id_file), Some(secret_file)) =
            (&spec.access_key_id_file, &spec.secret_access_key_file)
        {
            let id = read_secret_file(id_file, "access key id")?;
            let secret = read_secret_file(secret_file, "secret access key")?;
            // `Credentials`' Debug output hides the secret.
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                None,
                None,
                "strata-credential-files",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(spec.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if !spec.endpoint.is_empty() {
            builder = builder.endpoint_url(&spec.endpoint);
        }
        Ok(S3Target {
            client: Client::from_conf(builder.build()),
            bucket: spec.bucket.clone(),
            prefix: spec.prefix.clone(),
            storage_class: (!spec.storage_class.is_empty())
                .then(|| StorageClass::from(spec.storage_class.as_str())),
            part_size: usize::try_from(spec.part_size.0).unwrap_or(8 << 20),
            concurrency: spec.upload_concurrency.max(1) as usize,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Starts reading a whole pack; `None` if there is no such object.
    async fn open_pack(&self, key: &str) -> NearlineResult<Option<BodyReader>> {
        let key = self.full_key(key);
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(object) => Ok(Some(BodyReader::start(object.body))),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(error) => Err(sdk_error(&format!("GET s3://{}/{key}", self.bucket), error)),
        }
    }

    async fn put_single(&self, key: &str, body: Vec<u8>) -> NearlineResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_storage_class(self.storage_class.clone())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("PUT s3://{}/{key}", self.bucket), e))?;
        Ok(())
    }

    /// Uploads the parts arriving on `parts` (the first already received) as one multipart
    /// upload, completing it only once `writer_ok` says the pack was written without error.
    async fn put_multipart(
        &self,
        key: &str,
        first: Vec<u8>,
        parts: &mut mpsc::Receiver<Vec<u8>>,
    ) -> NearlineResult<MultipartUpload> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_storage_class(self.storage_class.clone())
            .send()
            .await
            .map_err(|e| sdk_error(&format!("start upload of s3://{}/{key}", self.bucket), e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| NearlineError::unavailable("the server gave no upload id"))?
            .to_string();
        let mut upload = MultipartUpload {
            upload_id,
            completed: Vec::new(),
        };
        let result = self.send_parts(key, first, parts, &mut upload).await;
        match result {
            Ok(()) => Ok(upload),
            Err(error) => {
                self.abort(key, &upload.upload_id).await;
                Err(error)
            }
        }
    }

    async fn send_parts(
        &self,
        key: &str,
        first: Vec<u8>,
        parts: &mut mpsc::Receiver<Vec<u8>>,
        upload: &mut MultipartUpload,
    ) -> NearlineResult<()> {
        let mut in_flight: JoinSet<NearlineResult<CompletedPart>> = JoinSet::new();
        let mut next = Some(first);
        let mut number = 0i32;
        while let Some(body) = next.take() {
            number += 1;
            while in_flight.len() >= self.concurrency {
                if let Some(done) = in_flight.join_next().await {
                    upload.completed.push(joined(done)?);
                }
            }
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload.upload_id)
                .part_number(number)
                .body(ByteStream::from(body));
            let context = format!("upload part {number} of s3://{}/{key}", self.bucket);
            in_flight.spawn(async move {
                let sent = request.send().await.map_err(|e| sdk_error(&context, e))?;
                Ok(CompletedPart::builder()
                    .set_e_tag(sent.e_tag().map(str::to_string))
                    .part_number(number)
                    .build())
            });
            next = parts.recv().await;
        }
        while let Some(done) = in_flight.join_next().await {
            upload.completed.push(joined(done)?);
        }
        upload.completed.sort_by_key(|p| p.part_number());
        Ok(())
    }

    async fn complete(&self, key: &str, upload: MultipartUpload) -> NearlineResult<()> {
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(upload.completed))
                    .build(),
            )
            .send()
            .await;
        if let Err(error) = result {
            self.abort(key, &upload.upload_id).await;
            return Err(sdk_error(
                &format!("complete upload of s3://{}/{key}", self.bucket),
                error,
            ));
        }
        Ok(())
    }

    /// Best effort: an upload we could not abort is removed by `discard` on the next attempt.
    async fn abort(&self, key: &str, upload_id: &str) {
        if let Err(error) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(key, error = %DisplayErrorContext(error), "cannot abort multipart upload");
        }
    }
}

/// Runs blocking pack reading (tar, hashing, files) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> NearlineResult<T> + Send + 'static,
) -> NearlineResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NearlineError::unavailable(format!("pack reader thread failed: {e}")))?
}

struct MultipartUpload {
    upload_id: String,
    completed: Vec<CompletedPart>,
}

fn joined(
    done: Result<NearlineResult<CompletedPart>, tokio::task::JoinError>,
) -> NearlineResult<CompletedPart> {
    done.map_err(|e| NearlineError::unavailable(format!("upload task failed: {e}")))?
}

#[async_trait]
impl NearlineTarget for S3Target {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn upload_pack(
        &self,
        request: PackRequest,
        progress: Arc<TransferProgress>,
    ) -> NearlineResult<PackReceipt> {
        let key = self.full_key(&request.key);
        // Two parts queued besides those uploading: the writer stays ahead without holding
        // more than (concurrency + 2) parts in memory.
        let (sender, mut parts) = mpsc::channel::<Vec<u8>>(2);
        let part_size = self.part_size;
        let writer = tokio::task::spawn_blocking(move || {
            let mut sink = ChunkSink::new(sender, part_size);
            let receipt = write_pack(&request, &mut sink, &progress, now_millis())?;
            sink.finish()
                .map_err(|e| NearlineError::unavailable(format!("upload stopped: {e}")))?;
            Ok::<_, NearlineError>(receipt)
        });
        let writer_result =
            |joined: Result<NearlineResult<PackReceipt>, tokio::task::JoinError>| {
                joined
                    .map_err(|e| NearlineError::unavailable(format!("pack writer failed: {e}")))?
            };

        let Some(first) = parts.recv().await else {
            // The writer ended before producing a byte: its error says why.
            return writer_result(writer.await);
        };
        if first.len() < part_size {
            // The whole pack fits in one part: one PUT, once the writer says it is sound.
            let receipt = writer_result(writer.await)?;
            self.put_single(&key, first).await?;
            return Ok(receipt);
        }
        let uploaded = self.put_multipart(&key, first, &mut parts).await;
        drop(parts);
        let receipt = writer_result(writer.await);
        match (uploaded, receipt) {
            (Ok(upload), Ok(receipt)) => {
                self.complete(&key, upload).await?;
                Ok(receipt)
            }
            (Ok(upload), Err(error)) => {
                self.abort(&key, &upload.upload_id).await;
                Err(error)
            }
            // A source mismatch explains more than the broken upload it caused.
            (Err(upload_error), Err(writer_error))
                if writer_error.kind
                    == archive_core::nearline::NearlineErrorKind::SourceMismatch =>
            {
                drop(upload_error);
                Err(writer_error)
            }
            (Err(error), _) => Err(error),
        }
    }

    async fn verify_pack(
        &self,
        expected: &ExpectedPack,
        progress: Arc<TransferProgress>,
    ) -> NearlineResult<VerifyOutcome> {
        let Some(reader) = self.open_pack(&expected.key).await? else {
            return Ok(VerifyOutcome::Damaged(vec![format!(
                "s3://{}/{} does not exist",
                self.bucket,
                self.full_key(&expected.key)
            )]));
        };
        let expected = expected.clone();
        blocking(move || {
            verify_pack_stream(
                std::io::BufReader::with_capacity(1 << 20, reader),
                &expected,
                &progress,
            )
        })
        .await
    }

    async fn unpack_pack(
        &self,
        expected: &ExpectedPack,
        dir: &std::path::Path,
        progress: Arc<TransferProgress>,
        ready: MemberReady,
    ) -> NearlineResult<()> {
        let reader = self.open_pack(&expected.key).await?.ok_or_else(|| {
            NearlineError::invalid(format!(
                "s3://{}/{} does not exist",
                self.bucket,
                self.full_key(&expected.key)
            ))
        })?;
        archive_core::metrics::PACK_FETCHES.add(1);
        let expected = expected.clone();
        let dir = dir.to_path_buf();
        blocking(move || {
            let counted = CountedRead(std::io::BufReader::with_capacity(1 << 20, reader));
            unpack_pack_stream(counted, &expected, &progress, &dir, &*ready)
        })
        .await
    }

    async fn read_range(&self, key: &str, offset: u64, length: u64) -> NearlineResult<Vec<u8>> {
        if length == 0 {
            return Ok(Vec::new());
        }
        let key = self.full_key(key);
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .range(format!("bytes={}-{}", offset, offset + length - 1))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("GET range of s3://{}/{key}", self.bucket), e))?;
        let data = object
            .body
            .collect()
            .await
            .map_err(|e| sdk_error(&format!("read s3://{}/{key}", self.bucket), e))?
            .into_bytes()
            .to_vec();
        archive_core::metrics::MEMBER_RANGE_READS.add(1);
        archive_core::metrics::NEARLINE_BYTES_READ.add(data.len() as u64);
        if data.len() as u64 != length {
            return Err(NearlineError::invalid(format!(
                "s3://{}/{key} returned {} bytes for a {length}-byte range",
                self.bucket,
                data.len()
            )));
        }
        Ok(data)
    }

    async fn list_packs(&self) -> NearlineResult<Vec<ListedPack>> {
        let mut found = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(|e| sdk_error(&format!("list s3://{}/{}", self.bucket, self.prefix), e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some(key) = key.strip_prefix(&self.prefix) else {
                    continue;
                };
                // `<Study Instance UID>/<name>.tar`: a prefix without a trailing `/` also lists
                // keys of other prefixes (`strata` matches `strata-test/…`), which are not ours.
                let first = key.split('/').next().unwrap_or("");
                if !key.ends_with(".tar")
                    || first.is_empty()
                    || !first.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                {
                    continue;
                }
                found.push(ListedPack {
                    key: key.to_string(),
                    size: u64::try_from(object.size().unwrap_or(0)).unwrap_or(0),
                });
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn read_contents(&self, key: &str, size: u64) -> NearlineResult<PackContents> {
        crate::manifest::read_contents(self, key, size).await
    }

    async fn discard(&self, key: &str) -> NearlineResult<()> {
        let key = self.full_key(key);
        let uploads = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&key)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("list uploads of s3://{}/{key}", self.bucket), e))?;
        for upload in uploads.uploads() {
            if let (Some(upload_key), Some(id)) = (upload.key(), upload.upload_id()) {
                if upload_key == key {
                    self.abort(&key, id).await;
                }
            }
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("DELETE s3://{}/{key}", self.bucket), e))?;
        Ok(())
    }
}

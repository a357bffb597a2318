//! One conformance suite for file storage, run against every blob backend:
//! the local filesystem always, S3 when `KILN_TEST_S3_ENDPOINT` is set (CI
//! points it at moto's server, with `KILN_TEST_S3_BUCKET` and the AWS_*
//! credentials). File records are in an embedded document store.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use kiln::capabilities::storage::backend::{BlobSettings, Blobs};
use kiln::capabilities::storage::{Files, Overwrite, StorageError};
use kiln::store::{Documents, StoreLimits};
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

struct Fixture {
    files: Files,
    blobs: Arc<Blobs>,
    documents: Documents,
    app: String,
    _dirs: Vec<tempfile::TempDir>,
}

fn unique_app() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t{nanos:x}{:x}", std::process::id())
}

fn documents(dir: &tempfile::TempDir) -> Documents {
    let store =
        kiln::store::sqlite::SqliteStore::open(dir.path(), std::time::Duration::from_secs(5))
            .unwrap();
    Documents::new(Arc::new(store), StoreLimits::default())
}

async fn fixture(settings: BlobSettings, mut dirs: Vec<tempfile::TempDir>) -> Fixture {
    let db = tempfile::tempdir().unwrap();
    let blobs = Arc::new(Blobs::open(&settings).unwrap());
    let documents = documents(&db);
    let files = Files::new(documents.clone(), blobs.clone(), "admin key");
    files.create_indexes().await.unwrap();
    dirs.push(db);
    Fixture {
        files,
        blobs,
        documents,
        app: unique_app(),
        _dirs: dirs,
    }
}

async fn local() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    Some(fixture(BlobSettings::Local { root }, vec![dir]).await)
}

async fn s3() -> Option<Fixture> {
    let Ok(endpoint) = std::env::var("KILN_TEST_S3_ENDPOINT") else {
        eprintln!("KILN_TEST_S3_ENDPOINT is not set: skipping the S3 run");
        return None;
    };
    let bucket = std::env::var("KILN_TEST_S3_BUCKET").unwrap_or_else(|_| "kiln-test".into());
    let settings = BlobSettings::S3 {
        bucket,
        region: None,
        endpoint: Some(endpoint),
        access_key_id: None,
        secret_access_key: None,
        allow_http: true,
    };
    Some(fixture(settings, vec![]).await)
}

fn body(
    bytes: Vec<u8>,
    chunk: usize,
) -> impl futures::Stream<Item = Result<Bytes, String>> + Unpin + Send {
    let chunks: Vec<Result<Bytes, String>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

impl Fixture {
    async fn put(&self, key: &str, bytes: &[u8]) -> kiln::capabilities::storage::FileMeta {
        self.files
            .put(
                &self.app,
                key,
                Some("text/plain"),
                Overwrite::Allowed,
                u64::MAX,
                body(bytes.to_vec(), 1000),
            )
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"))
    }

    async fn read(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Vec<u8>, StorageError> {
        let download = self.files.get(&self.app, key, range).await?;
        let mut bytes = Vec::new();
        let mut stream = download.body;
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    /// The blobs the backend holds for this app.
    async fn blob_count(&self) -> usize {
        let prefix = object_store::path::Path::from_iter(["files", self.app.as_str()]);
        let listed: Vec<_> = self.blobs.store().list(Some(&prefix)).collect().await;
        listed.into_iter().filter(|m| m.is_ok()).count()
    }
}

async fn put_get_head_and_delete(f: Fixture) {
    let meta = f.put("docs/readme.txt", b"hello, files").await;
    assert_eq!((meta.size, meta.content_type.as_str()), (12, "text/plain"));
    assert_eq!(
        f.read("docs/readme.txt", None).await.unwrap(),
        b"hello, files"
    );
    let head = f
        .files
        .head(&f.app, "docs/readme.txt")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head, meta);
    // Another app sees nothing at the same key.
    assert!(
        f.files
            .head("other-app", "docs/readme.txt")
            .await
            .unwrap()
            .is_none()
    );
    assert!(f.files.delete(&f.app, "docs/readme.txt").await.unwrap());
    assert!(!f.files.delete(&f.app, "docs/readme.txt").await.unwrap());
    assert!(
        f.files
            .head(&f.app, "docs/readme.txt")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        f.read("docs/readme.txt", None).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(f.blob_count().await, 0);
}

async fn a_replaced_file_keeps_one_blob_and_a_new_etag(f: Fixture) {
    let first = f.put("a.txt", b"one").await;
    let second = f.put("a.txt", b"second").await;
    assert_ne!(first.etag, second.etag);
    assert_eq!(f.read("a.txt", None).await.unwrap(), b"second");
    assert_eq!(f.blob_count().await, 1);
    assert_eq!(f.files.usage(&f.app).await.unwrap(), (1, 6));
}

async fn ranges(f: Fixture) {
    f.put("r", b"0123456789").await;
    assert_eq!(f.read("r", Some(2..5)).await.unwrap(), b"234");
    assert_eq!(
        f.read("r", Some(8..100)).await.unwrap(),
        b"89",
        "clamped to the end"
    );
    assert!(matches!(
        f.read("r", Some(10..12)).await,
        Err(StorageError::RangeNotSatisfiable(10))
    ));
    assert!(matches!(
        f.read("r", Some(5..5)).await,
        Err(StorageError::RangeNotSatisfiable(10))
    ));
    let download = f.files.get(&f.app, "r", Some(3..7)).await.unwrap();
    assert_eq!((download.range, download.meta.size), (3..7, 10));
}

async fn listing_with_a_prefix_and_a_cursor(f: Fixture) {
    for key in ["b/1", "b/2", "b/3", "b/4", "b/5", "ba", "a", "c/1"] {
        f.put(key, key.as_bytes()).await;
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f
            .files
            .list(&f.app, "b/", cursor.as_deref(), 2)
            .await
            .unwrap();
        assert!(page.files.len() <= 2);
        seen.extend(page.files.iter().map(|m| m.key.clone()));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["b/1", "b/2", "b/3", "b/4", "b/5"]);
    let all = f.files.list(&f.app, "", None, 100).await.unwrap();
    assert_eq!(all.files.len(), 8);
    assert!(all.cursor.is_none());
    let b = f.files.list(&f.app, "b", None, 100).await.unwrap();
    assert_eq!(b.files.len(), 6, "`b` is a prefix of `ba` too");
    assert!(matches!(
        f.files.list(&f.app, "", None, 0).await,
        Err(StorageError::InvalidInput(_))
    ));
}

async fn copy(f: Fixture) {
    f.put("from", b"copied bytes").await;
    f.put("to", b"old").await;
    let meta = f.files.copy(&f.app, "from", "to").await.unwrap();
    assert_eq!(meta.size, 12);
    assert_eq!(f.read("to", None).await.unwrap(), b"copied bytes");
    assert_eq!(f.read("from", None).await.unwrap(), b"copied bytes");
    f.files.delete(&f.app, "from").await.unwrap();
    assert_eq!(f.read("to", None).await.unwrap(), b"copied bytes");
    assert_eq!(f.blob_count().await, 1);
    assert!(matches!(
        f.files.copy(&f.app, "missing", "x").await,
        Err(StorageError::NotFound(_))
    ));
}

async fn conditional_create(f: Fixture) {
    let create = |bytes: &'static [u8]| {
        f.files.put(
            &f.app,
            "once",
            None,
            Overwrite::Refused,
            u64::MAX,
            body(bytes.to_vec(), 4),
        )
    };
    let first = create(b"first").await.unwrap();
    assert_eq!(first.content_type, "application/octet-stream");
    assert!(matches!(
        create(b"second").await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(f.read("once", None).await.unwrap(), b"first");
    assert_eq!(f.blob_count().await, 1, "the refused write left nothing");
}

async fn multipart_upload_of_a_large_file(f: Fixture) {
    // Three parts of 5 MiB and a remainder, sent in 64 KiB pieces.
    let bytes: Vec<u8> = (0..(16 * 1024 * 1024 + 12345u32))
        .map(|i| (i % 251) as u8)
        .collect();
    let meta = f
        .files
        .put(
            &f.app,
            "big.bin",
            None,
            Overwrite::Allowed,
            u64::MAX,
            body(bytes.clone(), 64 * 1024),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, bytes.len() as u64);
    let read = f.read("big.bin", None).await.unwrap();
    assert_eq!(Sha256::digest(&read), Sha256::digest(&bytes));
    let tail = f
        .read("big.bin", Some(meta.size - 10..meta.size))
        .await
        .unwrap();
    assert_eq!(tail, bytes[bytes.len() - 10..]);
}

async fn an_upload_over_its_limit_or_cut_off_leaves_nothing(f: Fixture) {
    let bytes = vec![7u8; 6 * 1024 * 1024];
    let over = f
        .files
        .put(
            &f.app,
            "over",
            None,
            Overwrite::Allowed,
            5 * 1024 * 1024,
            body(bytes, 256 * 1024),
        )
        .await;
    assert!(
        matches!(over, Err(StorageError::LimitExceeded(_))),
        "{over:?}"
    );
    let cut: Vec<Result<Bytes, String>> = vec![
        Ok(Bytes::from(vec![1u8; 1000])),
        Err("connection reset".into()),
    ];
    let cut = f
        .files
        .put(
            &f.app,
            "cut",
            None,
            Overwrite::Allowed,
            u64::MAX,
            futures::stream::iter(cut),
        )
        .await;
    assert!(matches!(cut, Err(StorageError::InvalidInput(_))), "{cut:?}");
    assert!(f.files.head(&f.app, "over").await.unwrap().is_none());
    assert!(f.files.head(&f.app, "cut").await.unwrap().is_none());
    assert_eq!(f.blob_count().await, 0);
    assert_eq!(f.files.usage(&f.app).await.unwrap(), (0, 0));
}

async fn invalid_keys_are_refused(f: Fixture) {
    for key in [
        "", "/a", "a/", "a//b", "..", "a/../b", "./a", "a\\b", "a\nb",
    ] {
        let put = f
            .files
            .put(
                &f.app,
                key,
                None,
                Overwrite::Allowed,
                u64::MAX,
                body(b"x".to_vec(), 1),
            )
            .await;
        assert!(
            matches!(put, Err(StorageError::InvalidInput(_))),
            "{key:?}: {put:?}"
        );
        assert!(matches!(
            f.files.head(&f.app, key).await,
            Err(StorageError::InvalidInput(_))
        ));
    }
    let long = "k".repeat(kiln::capabilities::storage::keys::MAX_KEY_BYTES + 1);
    assert!(matches!(
        f.files.head(&f.app, &long).await,
        Err(StorageError::InvalidInput(_))
    ));
    // Unusual but valid keys are stored as given.
    for key in ["ü/空 白.txt", "a%2Fb", "#1", "a?b=c"] {
        f.put(key, key.as_bytes()).await;
        assert_eq!(f.read(key, None).await.unwrap(), key.as_bytes(), "{key}");
    }
    assert_eq!(f.blob_count().await, 4);
}

async fn thumbnails_are_kept_and_go_with_their_version(f: Fixture) {
    use image::GenericImageView;
    use kiln::capabilities::storage::thumbnails::ThumbSize;
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::new(90, 30))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let meta = f
        .files
        .put(
            &f.app,
            "pics/a.png",
            Some("image/png"),
            Overwrite::Allowed,
            u64::MAX,
            body(png.into_inner(), 100),
        )
        .await
        .unwrap();
    let size = ThumbSize::parse("30x30").unwrap();
    let made = f.files.thumbnail(&f.app, &meta, size).await.unwrap();
    assert_eq!(made.content_type, "image/png");
    assert_eq!(
        image::load_from_memory(&made.bytes).unwrap().dimensions(),
        (30, 30)
    );
    let thumbs = |blob: String| {
        let store = f.blobs.store().clone();
        let app = f.app.clone();
        async move {
            let prefix =
                object_store::path::Path::from_iter(["thumbs", app.as_str(), blob.as_str()]);
            let listed: Vec<_> = store.list(Some(&prefix)).collect().await;
            listed.into_iter().filter(|m| m.is_ok()).count()
        }
    };
    assert_eq!(thumbs(meta.etag.clone()).await, 1, "kept on the backend");
    let kept = f.files.thumbnail(&f.app, &meta, size).await.unwrap();
    assert_eq!(kept.bytes, made.bytes);
    assert!(f.files.delete(&f.app, "pics/a.png").await.unwrap());
    assert_eq!(thumbs(meta.etag).await, 0, "deleted with the file");
}

async fn the_sweep_drops_expired_uploads_and_left_behind_blobs_only(f: Fixture) {
    use kiln::capabilities::storage::sweep::{PENDING_GRACE_MS, Swept};
    use kiln::store::platform::now_ms;
    use kiln::store::platform::pending_blobs::{self, PendingBlob};
    let now = now_ms();
    // An upload left half done: kept while it may be continued, swept after.
    let upload = f
        .files
        .start_upload(
            &f.app,
            Some("ada"),
            "big/left.bin",
            10,
            "application/octet-stream",
            Overwrite::Allowed,
        )
        .await
        .unwrap();
    // 128 random bits; and the upload is its owner's alone.
    assert_eq!(upload.id.len(), 32);
    assert!(upload.id.bytes().all(|b| b.is_ascii_hexdigit()));
    for stranger in [None, Some("bob")] {
        assert!(matches!(
            f.files
                .append_upload(&f.app, &upload.id, stranger, 0, body(vec![2; 4], 4))
                .await,
            Err(StorageError::NotFound(_))
        ));
        assert!(matches!(
            f.files.upload_progress(&f.app, &upload.id, stranger).await,
            Err(StorageError::NotFound(_))
        ));
        assert!(matches!(
            f.files.abort_upload(&f.app, &upload.id, stranger).await,
            Err(StorageError::NotFound(_))
        ));
    }
    f.files
        .append_upload(&f.app, &upload.id, Some("ada"), 0, body(vec![1; 4], 4))
        .await
        .unwrap();
    // Its owner sees it (on S3 the offset moves in whole parts: still 0).
    assert!(
        f.files
            .upload_progress(&f.app, &upload.id, Some("ada"))
            .await
            .is_ok()
    );
    assert_eq!(f.files.sweep(now).await.unwrap(), Swept::default());
    let later = now + 25 * 3600 * 1000;
    assert_eq!(f.files.sweep(later).await.unwrap().uploads, 1);
    assert!(matches!(
        f.files
            .upload_progress(&f.app, &upload.id, Some("ada"))
            .await,
        Err(StorageError::NotFound(_))
    ));
    // Writes settle what they marked: nothing is pending after them.
    f.put("docs/kept.txt", b"first").await;
    f.put("docs/kept.txt", b"second").await;
    f.files.delete(&f.app, "docs/kept.txt").await.unwrap();
    f.put("docs/kept.txt", b"kept").await;
    assert_eq!(
        pending_blobs::stale(&f.documents, u64::MAX, 10)
            .await
            .unwrap(),
        Vec::<PendingBlob>::new()
    );
    let blobs_before = f.blob_count().await;
    // A crash between a blob and its record: the blob is pending, no record points at it.
    let orphan = "orphan0123456789".to_string();
    f.blobs
        .store()
        .put(
            &f.blobs.path(&f.app, &orphan),
            object_store::PutPayload::from_static(b"orphaned"),
        )
        .await
        .unwrap();
    // A crash after the record switched, before the mark was cleared.
    let current = f
        .files
        .head(&f.app, "docs/kept.txt")
        .await
        .unwrap()
        .unwrap();
    let old = now - PENDING_GRACE_MS - 1;
    for (blob, key) in [
        (&orphan, "docs/orphan.txt"),
        (&current.etag, "docs/kept.txt"),
    ] {
        let pending = PendingBlob {
            blob: blob.clone(),
            app: f.app.clone(),
            key: key.to_string(),
            created_ms: old,
        };
        pending_blobs::mark(&f.documents, &pending).await.unwrap();
    }
    assert_eq!(f.blob_count().await, blobs_before + 1);
    let swept = f.files.sweep(now).await.unwrap();
    assert_eq!(
        swept,
        Swept {
            uploads: 0,
            blobs: 1
        }
    );
    assert_eq!(f.blob_count().await, blobs_before);
    assert_eq!(f.read("docs/kept.txt", None).await.unwrap(), b"kept");
    assert_eq!(
        f.files.sweep(now).await.unwrap(),
        Swept::default(),
        "settled"
    );
}

macro_rules! conformance {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(fixture) = super::$backend().await {
                        super::$case(fixture).await;
                    }
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        conformance!(local: $($case),*);
        conformance!(s3: $($case),*);
    };
}

every_backend!(
    put_get_head_and_delete,
    a_replaced_file_keeps_one_blob_and_a_new_etag,
    ranges,
    listing_with_a_prefix_and_a_cursor,
    copy,
    conditional_create,
    multipart_upload_of_a_large_file,
    an_upload_over_its_limit_or_cut_off_leaves_nothing,
    invalid_keys_are_refused,
    thumbnails_are_kept_and_go_with_their_version,
    the_sweep_drops_expired_uploads_and_left_behind_blobs_only,
);

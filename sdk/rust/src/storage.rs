//! The app's files. Small files move in one call ([`put`], [`get`]);
//! large ones stream ([`write`] gives a [`std::io::Write`], [`read`] a
//! [`std::io::Read`]), so a function passes them through without holding
//! them in memory. Keys are `/`-separated, at most 512 bytes; see the
//! README for what a key may hold.

use std::io;

use crate::bindings::kiln::platform::storage as wit;
use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

pub use wit::{Error, FileMeta, ListPage};

/// Stores `data` at `key` (at most 16 MiB), replacing what is there.
pub fn put(key: &str, data: &[u8], content_type: Option<&str>) -> Result<FileMeta, Error> {
    wit::put(key, data, content_type)
}

/// The whole file at `key` (at most 16 MiB).
pub fn get(key: &str) -> Result<Vec<u8>, Error> {
    wit::get(key)
}

/// The file's metadata, or `None`.
pub fn head(key: &str) -> Result<Option<FileMeta>, Error> {
    wit::head(key)
}

/// Deletes the file; `false` when there was none.
pub fn delete(key: &str) -> Result<bool, Error> {
    wit::delete(key)
}

/// Files whose key starts with `prefix`, in key order, `limit` (1 to 1,000)
/// per page; pass the page's `cursor` for the next.
pub fn list(prefix: &str, cursor: Option<&str>, limit: u32) -> Result<ListPage, Error> {
    wit::list_files(prefix, cursor, limit)
}

/// Copies `source` to `destination`, replacing what is there.
pub fn copy(source: &str, destination: &str) -> Result<FileMeta, Error> {
    wit::copy(source, destination)
}

/// A URL allowing `method` (`"GET"` or `"PUT"`) on `key` for
/// `expires_secs` (1 s to 7 days), for a client without a token; the key's
/// bucket must be declared in `kiln.toml`. Kiln-signed URLs are relative to
/// the app's base URL (`/_kiln/files/...`); on S3 a GET is an S3 URL.
pub fn signed_url(key: &str, method: &str, expires_secs: u32) -> Result<String, Error> {
    wit::signed_url(key, method, expires_secs)
}

/// Options of [`write`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions<'a> {
    pub content_type: Option<&'a str>,
    /// Refuse (`conflict`) when a file is already at the key.
    pub if_absent: bool,
    /// The most bytes the file may have; default 5 GiB.
    pub max_bytes: Option<u64>,
}

/// Starts writing a file at `key`: write to the [`FileWriter`], then
/// [`FileWriter::finish`]. Dropped unfinished, it stores nothing.
pub fn write(key: &str, options: WriteOptions<'_>) -> Result<FileWriter, Error> {
    let writer = wit::write(
        key,
        options.content_type,
        options.if_absent,
        options.max_bytes.unwrap_or(5 * 1024 * 1024 * 1024),
    )?;
    let body = writer.body()?;
    Ok(FileWriter {
        body: Some(body),
        writer,
    })
}

/// A file being written.
pub struct FileWriter {
    body: Option<OutputStream>,
    writer: wit::Writer,
}

impl FileWriter {
    /// Stores the file; its metadata.
    pub fn finish(mut self) -> Result<FileMeta, Error> {
        let body = self
            .body
            .take()
            .ok_or_else(|| Error::InvalidInput("finished already".into()))?;
        // A failed flush means the host stopped reading; `finish` says why.
        let _ = body.blocking_flush();
        self.writer.finish(body)
    }
}

impl io::Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let body = self.body.as_ref().ok_or_else(closed)?;
        // At most 4 KiB per call, as `blocking-write-and-flush` allows.
        let n = buf.len().min(4096);
        body.blocking_write_and_flush(&buf[..n])
            .map_err(|e| io::Error::other(stream_error(e)))?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let body = self.body.as_ref().ok_or_else(closed)?;
        body.blocking_flush()
            .map_err(|e| io::Error::other(stream_error(e)))
    }
}

/// Opens the file at `key` for reading.
pub fn read(key: &str) -> Result<(FileMeta, FileReader), Error> {
    let (meta, body) = wit::read(key, None)?;
    Ok((meta, FileReader { body }))
}

/// Opens bytes `[start, end)` of the file at `key` (clamped to its end).
pub fn read_range(key: &str, start: u64, end: u64) -> Result<(FileMeta, FileReader), Error> {
    let (meta, body) = wit::read(key, Some((start, end)))?;
    Ok((meta, FileReader { body }))
}

/// A file being read.
pub struct FileReader {
    body: InputStream,
}

impl io::Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.body.blocking_read(buf.len() as u64) {
            Ok(bytes) => {
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
            Err(StreamError::Closed) => Ok(0),
            Err(e) => Err(io::Error::other(stream_error(e))),
        }
    }
}

fn closed() -> io::Error {
    io::Error::other("the file writer is finished")
}

fn stream_error(err: StreamError) -> String {
    match err {
        StreamError::Closed => "the stream is closed".into(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

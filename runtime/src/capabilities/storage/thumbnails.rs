//! Thumbnails of image files, in the sizes a bucket declares: made once per
//! version of a file, on the first request, and kept beside its bytes
//! (`thumbs/APP/BLOB/SIZE`), so a new version gets new ones and deleting
//! the version deletes them.
//!
//! Decoding is the costly, attacker-shaped part, so it is bounded before it
//! starts: the source's bytes and its pixel count (read from the header)
//! are capped, it runs in fair turns on the blocking pool (one per app,
//! one per core: [`BlockingTurns`](crate::capabilities::turns::BlockingTurns)),
//! and only declared sizes are made, so a client cannot fill the backend
//! with variants.

use std::fmt;
use std::io::Cursor;

use bytes::Bytes;
use futures::StreamExt;
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::StorageError;
use super::files::{FileMeta, Files};
use crate::capabilities::turns::Busy;

/// Largest side of a thumbnail.
pub const MAX_SIDE: u32 = 2048;
/// Largest source file a thumbnail is made from.
pub const MAX_SOURCE_BYTES: u64 = 20 * 1024 * 1024;
/// Largest source image, in pixels (e.g. 5000 x 5000).
pub const MAX_SOURCE_PIXELS: u64 = 25_000_000;
/// Sizes one bucket may declare.
pub const MAX_SIZES: usize = 10;
const JPEG_QUALITY: u8 = 80;

/// The content types thumbnails are made of.
pub const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// A thumbnail's size: `WxH` fills it, cropping the middle; `WxHf` fits
/// inside it; `Wx0` and `0xH` scale to one side. Never larger than the
/// source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThumbSize {
    pub width: u32,
    pub height: u32,
    pub fit: bool,
}

impl ThumbSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{}` is not a thumbnail size: `WxH` (crop), `WxHf` (fit), `Wx0` or `0xH`, sides up to {MAX_SIDE}",
                text.escape_debug()
            )
        };
        let (sides, fit) = match text.strip_suffix('f') {
            Some(sides) => (sides, true),
            None => (text, false),
        };
        let (w, h) = sides.split_once('x').ok_or_else(bad)?;
        let side = |s: &str| {
            if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_SIDE)
                .ok_or_else(bad)
        };
        let size = ThumbSize {
            width: side(w)?,
            height: side(h)?,
            fit,
        };
        let one_side = size.width == 0 || size.height == 0;
        if (size.width == 0 && size.height == 0) || (one_side && fit) {
            return Err(bad());
        }
        Ok(size)
    }

    /// The image scaled to this size.
    fn apply(self, image: &DynamicImage) -> DynamicImage {
        let (sw, sh) = (image.width(), image.height());
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 || self.fit {
            // Scales to fit; a zero side does not bound.
            let w = if w == 0 { u32::MAX } else { w };
            let h = if h == 0 { u32::MAX } else { h };
            if sw <= w && sh <= h {
                return image.clone();
            }
            return image.thumbnail(w.min(sw), h.min(sh));
        }
        // Crop the middle to the target's proportions, then scale down.
        let (cw, ch) = if u64::from(sw) * u64::from(h) > u64::from(sh) * u64::from(w) {
            (
                (u64::from(sh) * u64::from(w) / u64::from(h)).max(1) as u32,
                sh,
            )
        } else {
            (
                sw,
                (u64::from(sw) * u64::from(h) / u64::from(w)).max(1) as u32,
            )
        };
        let cropped = image.crop_imm((sw - cw) / 2, (sh - ch) / 2, cw, ch);
        if cw <= w {
            return cropped;
        }
        cropped.thumbnail_exact(w, h)
    }
}

impl fmt::Display for ThumbSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{}{}",
            self.width,
            self.height,
            if self.fit { "f" } else { "" }
        )
    }
}

/// Why a thumbnail could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// Not an image type thumbnails are made of.
    #[error("{0}")]
    Unsupported(String),
    /// The source is over a cap, or does not decode.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A made (or kept) thumbnail.
pub struct Thumbnail {
    pub content_type: &'static str,
    pub bytes: Bytes,
}

/// JPEGs stay JPEGs; everything else becomes PNG (keeping transparency).
fn output_type(source_type: &str) -> (&'static str, &'static str) {
    if source_type == "image/jpeg" {
        ("image/jpeg", "jpg")
    } else {
        ("image/png", "png")
    }
}

fn thumbs_folder(app: &str, blob: &str) -> Path {
    Path::from_iter(["thumbs", app, blob])
}

impl Files {
    /// The thumbnail of the file version `meta` describes, made on first use.
    pub async fn thumbnail(
        &self,
        app: &str,
        meta: &FileMeta,
        size: ThumbSize,
    ) -> Result<Thumbnail, ThumbnailError> {
        if !IMAGE_TYPES.contains(&meta.content_type.as_str()) {
            return Err(ThumbnailError::Unsupported(format!(
                "thumbnails are made of {} files, not {}",
                IMAGE_TYPES.join(", "),
                meta.content_type
            )));
        }
        let (content_type, extension) = output_type(&meta.content_type);
        let path = thumbs_folder(app, &meta.etag).join(format!("{size}.{extension}"));
        if let Some(bytes) = self.kept_thumbnail(&path).await? {
            return Ok(Thumbnail {
                content_type,
                bytes,
            });
        }
        if meta.size > MAX_SOURCE_BYTES {
            return Err(ThumbnailError::Failed(format!(
                "thumbnails are made of images up to {MAX_SOURCE_BYTES} bytes; this one has {}",
                meta.size
            )));
        }
        let turn = self.thumbnail_turns.turn(app).await.map_err(|Busy| {
            StorageError::Busy(format!("app `{app}` is making other thumbnails; try again"))
        })?;
        // Another request may have made it while this one waited.
        if let Ok(Some(bytes)) = self.kept_thumbnail(&path).await {
            return Ok(Thumbnail {
                content_type,
                bytes,
            });
        }
        let source = self
            .open(app, meta.clone(), None)
            .await?
            .into_bytes()
            .await?;
        let made = turn
            .run(move || render(&source, size, content_type))
            .await
            .map_err(|Busy| ThumbnailError::Failed("making the thumbnail stopped".into()))??;
        let bytes = Bytes::from(made);
        // A thumbnail that cannot be kept is still served; the next request makes it again.
        if let Err(e) = self
            .blobs
            .store()
            .put(&path, PutPayload::from(bytes.clone()))
            .await
        {
            tracing::warn!(app, key = meta.key, "a thumbnail was not kept: {e}");
        }
        Ok(Thumbnail {
            content_type,
            bytes,
        })
    }

    async fn kept_thumbnail(&self, path: &Path) -> Result<Option<Bytes>, StorageError> {
        match self.blobs.store().get(path).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(|e| backend(path, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(path, e)),
        }
    }

    /// Deletes the thumbnails of a blob (a version being deleted).
    pub(super) async fn delete_thumbnails(&self, app: &str, blob: &str) {
        let store = self.blobs.store();
        let folder = thumbs_folder(app, blob);
        let mut listing = store.list(Some(&folder));
        while let Some(item) = listing.next().await {
            let result = match item {
                Ok(object) => store.delete(&object.location).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(app, blob, "a deleted file's thumbnails were kept: {e}");
                    return;
                }
            }
        }
    }
}

fn backend(path: &Path, err: object_store::Error) -> StorageError {
    StorageError::Unavailable(format!("file backend, {path}: {err}"))
}

/// Decodes `source` within the caps and encodes its thumbnail.
fn render(source: &[u8], size: ThumbSize, content_type: &str) -> Result<Vec<u8>, ThumbnailError> {
    let failed = |what: &str, e: &dyn fmt::Display| ThumbnailError::Failed(format!("{what}: {e}"));
    let reader = || {
        ImageReader::new(Cursor::new(source))
            .with_guessed_format()
            .map_err(|e| failed("reading the image", &e))
    };
    let probe = reader()?;
    if probe.format().is_none() {
        return Err(ThumbnailError::Failed(
            "the file is not a JPEG, PNG, GIF or WebP image".into(),
        ));
    }
    let (width, height) = probe
        .into_dimensions()
        .map_err(|e| failed("reading the image's size", &e))?;
    if u64::from(width) * u64::from(height) > MAX_SOURCE_PIXELS {
        return Err(ThumbnailError::Failed(format!(
            "thumbnails are made of images up to {MAX_SOURCE_PIXELS} pixels; this one is {width}x{height}"
        )));
    }
    let mut decoder = reader()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(MAX_SOURCE_PIXELS * 8);
    decoder.limits(limits);
    let image = decoder
        .decode()
        .map_err(|e| failed("decoding the image", &e))?;
    let thumb = size.apply(&image);
    let mut out = Cursor::new(Vec::new());
    if content_type == "image/jpeg" {
        thumb
            .to_rgb8()
            .write_with_encoder(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY))
            .map_err(|e| failed("encoding the thumbnail", &e))?;
    } else {
        thumb
            .write_to(&mut out, ImageFormat::Png)
            .map_err(|e| failed("encoding the thumbnail", &e))?;
    }
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GenericImageView, Rgba, RgbaImage};

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = RgbaImage::from_fn(width, height, |x, _| {
            Rgba([if x < width / 2 { 255 } else { 0 }, 0, 0, 255])
        });
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(image)
            .write_to(&mut out, ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    /// PNG's chunk checksum (CRC-32, reflected, polynomial 0xEDB88320).
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn dims(bytes: &[u8]) -> (u32, u32) {
        image::load_from_memory(bytes).unwrap().dimensions()
    }

    #[test]
    fn sizes_parse_in_their_documented_spellings_only() {
        assert_eq!(
            ThumbSize::parse("100x50").unwrap(),
            ThumbSize {
                width: 100,
                height: 50,
                fit: false
            }
        );
        assert!(ThumbSize::parse("100x50f").unwrap().fit);
        assert_eq!(ThumbSize::parse("0x50").unwrap().width, 0);
        assert_eq!(ThumbSize::parse("100x50f").unwrap().to_string(), "100x50f");
        for bad in [
            "", "x", "100", "100x", "x100", "0x0", "0x50f", "2049x10", "10x99999", "+1x1", "1x1 ",
            "１x1", "100X50", "100x50t", "-1x5", "00001x1",
        ] {
            assert!(ThumbSize::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn crop_fills_fit_fits_and_nothing_is_enlarged() {
        let source = png(400, 200);
        let made =
            |s: &str| dims(&render(&source, ThumbSize::parse(s).unwrap(), "image/png").unwrap());
        assert_eq!(made("100x100"), (100, 100));
        assert_eq!(made("100x100f"), (100, 50));
        assert_eq!(made("100x0"), (100, 50));
        assert_eq!(made("0x100"), (200, 100));
        assert_eq!(made("800x800f"), (400, 200), "fit never enlarges");
        assert_eq!(
            made("800x800"),
            (200, 200),
            "crop keeps the proportion, not the size"
        );
        let jpeg = render(&source, ThumbSize::parse("50x50").unwrap(), "image/jpeg").unwrap();
        assert_eq!(image::guess_format(&jpeg).unwrap(), ImageFormat::Jpeg);
    }

    #[test]
    fn a_huge_image_is_refused_from_its_header_before_decoding() {
        // A 1x1 PNG whose header claims 30000 x 30000 pixels (CRC mended).
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&30_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&30_000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = render(&bomb, ThumbSize::parse("10x10").unwrap(), "image/png").unwrap_err();
        assert!(err.to_string().contains("30000x30000"), "{err}");
        let err = render(
            b"not an image",
            ThumbSize::parse("10x10").unwrap(),
            "image/png",
        )
        .unwrap_err();
        assert!(matches!(err, ThumbnailError::Failed(_)), "{err}");
    }
}

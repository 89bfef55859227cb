//! Untrusted image bytes: damaged, truncated or random JPEG and PNG files are refused with an
//! error (never a panic) and quickly, whatever their header claims.

use std::io::Cursor;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use image::{ImageFormat, RgbImage};
use prodcat_vision::preprocess::decode_image;
use proptest::prelude::*;

const MAX_PIXELS: u64 = 4_000_000;

/// A small real photo-like picture, encoded once as JPEG and once as PNG.
fn encoded() -> &'static [Vec<u8>; 2] {
    static FILES: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    FILES.get_or_init(|| {
        let picture = RgbImage::from_fn(96, 64, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
        });
        let encode = |format| {
            let mut bytes = Cursor::new(Vec::new());
            picture.write_to(&mut bytes, format).unwrap();
            bytes.into_inner()
        };
        [encode(ImageFormat::Jpeg), encode(ImageFormat::Png)]
    })
}

fn decode_quickly(bytes: &[u8]) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let _ = decode_image(bytes, MAX_PIXELS);
    prop_assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?} for {} bytes",
        started.elapsed(),
        bytes.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes, sometimes behind a real JPEG or PNG signature.
    #[test]
    fn random_bytes_are_refused(signature in 0usize..3, bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut file = match signature {
            0 => vec![0xFF, 0xD8, 0xFF],
            1 => b"\x89PNG\r\n\x1a\n".to_vec(),
            _ => Vec::new(),
        };
        file.extend(bytes);
        decode_quickly(&file)?;
    }

    /// A real file with bytes changed (headers and sizes included) or cut short.
    #[test]
    fn damaged_files_never_panic(
        which in 0usize..2,
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut file = encoded()[which].clone();
        for (position, value) in changes {
            let index = position.index(file.len());
            file[index] = value;
        }
        if let Some(cut) = cut {
            file.truncate(cut.index(file.len()));
        }
        decode_quickly(&file)?;
    }
}

/// The undamaged files decode, so the properties above test refusals of real decoders.
#[test]
fn undamaged_files_decode() {
    for file in encoded() {
        let picture = decode_image(file, MAX_PIXELS).unwrap();
        assert_eq!((picture.width, picture.height), (96, 64));
    }
}

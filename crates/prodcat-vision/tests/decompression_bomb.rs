//! Decompression bombs are refused from the header, before the decoder allocates pixels:
//! this test binary counts heap allocations on the calling thread while preparing images
//! whose headers claim billions of pixels.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage};
use prodcat_vision::{PreprocessOptions, Preprocessor, VisionError};

struct CountingAllocator;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|total| total.set(total.get() + layout.size()));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|total| total.set(total.get() + new_size));
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocated_during<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let result = work();
    (result, ALLOCATED.with(Cell::get) - before)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
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

/// A small real PNG whose IHDR is rewritten to claim `width` x `height` (CRC fixed up).
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    RgbImage::from_pixel(16, 16, Rgb([1, 2, 3]))
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .expect("encode png");
    // signature (8) + length (4) + "IHDR" (4), then width and height.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// A small real JPEG whose SOF0 segment is rewritten to claim `width` x `height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    RgbImage::from_pixel(16, 16, Rgb([1, 2, 3]))
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)
        .expect("encode jpeg");
    let sof = bytes
        .windows(2)
        .position(|pair| pair == [0xFF, 0xC0])
        .expect("baseline JPEG has SOF0");
    // marker (2) + length (2) + precision (1), then height and width.
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

#[test]
fn bombs_are_refused_without_allocating_their_pixels() {
    let preprocessor = Preprocessor::new(PreprocessOptions::product_features());
    let png = png_claiming(100_000, 100_000);
    let jpeg = jpeg_claiming(65_000, 65_000);
    for (name, bytes, claimed) in [
        ("png", &png, 10_000_000_000u64),
        ("jpeg", &jpeg, 65_000 * 65_000),
    ] {
        let (result, allocated) = allocated_during(|| preprocessor.prepare(bytes));
        match result {
            Err(VisionError::ImageTooLarge { pixels, limit, .. }) => {
                assert_eq!(pixels, claimed, "{name}");
                assert_eq!(limit, 40_000_000, "{name}");
            }
            other => panic!("{name}: expected ImageTooLarge, got {other:?}"),
        }
        println!("{name}: refused after {allocated} bytes of allocation");
        assert!(allocated < 1 << 20, "{name}: {allocated} bytes allocated");
    }
    // A modest limit refuses a normal image too, and a generous one accepts it.
    let strict = Preprocessor::new(PreprocessOptions {
        max_pixels: 255,
        ..PreprocessOptions::product_features()
    });
    let small = png_claiming(16, 16);
    assert!(matches!(
        strict.prepare(&small),
        Err(VisionError::ImageTooLarge { .. })
    ));
    assert!(preprocessor.prepare(&small).is_ok());
}

//! Preprocessing on images the tests generate: decoding errors, border crop, geometry,
//! normalisation.

use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use prodcat_vision::preprocess::{
    decode_image, normalize_imagenet, probe_image, resize_to_input, white_border_box, PixelBox,
    IMAGENET_MEAN, IMAGENET_STD,
};
use prodcat_vision::{
    BorderCropOptions, PreprocessOptions, Preprocessor, ResizeGeometry, RgbPicture, VisionError,
    INPUT_SIZE,
};

/// White canvas with a coloured rectangle and mild noise on the product only.
fn product_photo(width: u32, height: u32, product: PixelBox) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let inside = x >= product.left
            && x < product.left + product.width
            && y >= product.top
            && y < product.top + product.height;
        if inside {
            Rgb([200u8.wrapping_add((x % 7) as u8), 30, 40 + (y % 5) as u8])
        } else {
            Rgb([255, 255, 255])
        }
    })
}

fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .expect("encoding a generated image");
    bytes
}

fn picture(image: RgbImage) -> RgbPicture {
    RgbPicture::new(image.width(), image.height(), image.into_raw()).expect("valid picture")
}

#[test]
fn border_box_finds_the_product_with_its_margin() {
    let product = PixelBox {
        left: 50,
        top: 40,
        width: 100,
        height: 50,
    };
    let options = BorderCropOptions {
        tolerance: 16,
        margin_per_mille: 20,
    };
    let found = white_border_box(&picture(product_photo(300, 200, product)), &options);
    // margin = ceil(100 * 20 / 1000) = 2 pixels on each side.
    assert_eq!(
        found,
        PixelBox {
            left: 48,
            top: 38,
            width: 104,
            height: 54
        }
    );
}

#[test]
fn border_box_survives_jpeg_noise() {
    let product = PixelBox {
        left: 120,
        top: 60,
        width: 200,
        height: 300,
    };
    let bytes = encode(&product_photo(500, 500, product), ImageFormat::Jpeg);
    let decoded = decode_image(&bytes, 40_000_000).expect("decoding our own JPEG");
    let found = white_border_box(&decoded, &BorderCropOptions::default());
    // JPEG ringing may widen the box by a few pixels; it must stay close to the truth.
    let margin = 6 + 300 * 20 / 1000;
    assert!(
        found.left + margin as u32 >= product.left && found.left <= product.left,
        "{found:?}"
    );
    assert!(
        found.top + margin as u32 >= product.top && found.top <= product.top,
        "{found:?}"
    );
    assert!(found.width <= product.width + 2 * margin as u32 && found.width >= product.width);
    assert!(found.height <= product.height + 2 * margin as u32 && found.height >= product.height);
}

#[test]
fn border_box_of_all_white_or_full_bleed_images_is_the_whole_image() {
    let white = picture(RgbImage::from_pixel(64, 48, Rgb([255, 255, 255])));
    let options = BorderCropOptions::default();
    let whole = PixelBox {
        left: 0,
        top: 0,
        width: 64,
        height: 48,
    };
    assert_eq!(white_border_box(&white, &options), whole);
    let dark = picture(RgbImage::from_pixel(64, 48, Rgb([10, 10, 10])));
    assert_eq!(white_border_box(&dark, &options), whole);
    // A single dark pixel is kept (with its margin) rather than cropped away.
    let mut dot = RgbImage::from_pixel(64, 48, Rgb([255, 255, 255]));
    dot.put_pixel(63, 47, Rgb([0, 0, 0]));
    let found = white_border_box(&picture(dot), &options);
    assert!(found.width >= 1 && found.height >= 1);
    assert_eq!(
        (found.left + found.width, found.top + found.height),
        (64, 48)
    );
}

#[test]
fn near_white_tolerance_is_respected() {
    let mut image = RgbImage::from_pixel(40, 40, Rgb([250, 250, 250]));
    image.put_pixel(20, 20, Rgb([236, 250, 250]));
    let strict = BorderCropOptions {
        tolerance: 4,
        margin_per_mille: 0,
    };
    let loose = BorderCropOptions {
        tolerance: 30,
        margin_per_mille: 0,
    };
    let picture = picture(image);
    // tolerance 4: 250 is already not white, nothing is cropped.
    assert_eq!(white_border_box(&picture, &strict).width, 40);
    // tolerance 30: everything is near-white, so the whole image is kept too.
    assert_eq!(white_border_box(&picture, &loose).width, 40);
    let medium = BorderCropOptions {
        tolerance: 10,
        margin_per_mille: 0,
    };
    assert_eq!(
        white_border_box(&picture, &medium),
        PixelBox {
            left: 20,
            top: 20,
            width: 1,
            height: 1
        }
    );
}

#[test]
fn pad_to_square_centres_a_wide_product_between_white_bars() {
    let image = RgbImage::from_pixel(400, 100, Rgb([0, 0, 0]));
    let picture = picture(image);
    let whole = PixelBox {
        left: 0,
        top: 0,
        width: 400,
        height: 100,
    };
    let rgb = resize_to_input(&picture, whole, ResizeGeometry::PadToSquare).expect("resize");
    assert_eq!(rgb.len(), INPUT_SIZE * INPUT_SIZE * 3);
    let pixel = |x: usize, y: usize| &rgb[(y * INPUT_SIZE + x) * 3..(y * INPUT_SIZE + x) * 3 + 3];
    // 100 * 224 / 400 = 56 rows of product, centred: rows 84..140.
    assert_eq!(pixel(112, 10), [255, 255, 255]);
    assert_eq!(pixel(112, 83), [255, 255, 255]);
    assert_eq!(pixel(112, 100), [0, 0, 0]);
    assert_eq!(pixel(5, 139), [0, 0, 0]);
    assert_eq!(pixel(112, 140), [255, 255, 255]);
}

#[test]
fn centre_crop_keeps_the_middle_of_a_tall_image() {
    // Top third red, middle third green, bottom third blue.
    let image = RgbImage::from_fn(300, 900, |_, y| match y / 300 {
        0 => Rgb([255, 0, 0]),
        1 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    });
    let picture = picture(image);
    let whole = PixelBox {
        left: 0,
        top: 0,
        width: 300,
        height: 900,
    };
    let rgb = resize_to_input(
        &picture,
        whole,
        ResizeGeometry::ShorterSideThenCenterCrop { shorter_side: 256 },
    )
    .expect("resize");
    // 300x900 -> 256x768; the centre 224 rows (272..496) are all inside the green band.
    assert!(rgb.chunks_exact(3).all(|pixel| pixel == [0, 255, 0]));
}

#[test]
fn normalisation_applies_imagenet_mean_and_std_in_nhwc_order() {
    let mut rgb = vec![0u8; INPUT_SIZE * INPUT_SIZE * 3];
    rgb[0] = 255; // first pixel, red
    rgb[4] = 128; // second pixel, green
    let prepared = normalize_imagenet(&rgb).expect("normalise");
    let values = prepared.values();
    let expected = |value: f32, channel: usize| {
        (value / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
    };
    assert!((values[0] - expected(255.0, 0)).abs() < 1e-6);
    assert!((values[1] - expected(0.0, 1)).abs() < 1e-6);
    assert!((values[4] - expected(128.0, 1)).abs() < 1e-6);
    assert!(normalize_imagenet(&rgb[..10]).is_err());
}

#[test]
fn png_with_transparency_is_composed_over_white() {
    let image = RgbaImage::from_fn(8, 8, |x, _| {
        if x < 4 {
            Rgba([0, 0, 0, 0])
        } else {
            Rgba([0, 0, 0, 255])
        }
    });
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .expect("encode png");
    let decoded = decode_image(&bytes, 1000).expect("decode png");
    assert_eq!(&decoded.pixels[..3], &[255, 255, 255]);
    assert_eq!(&decoded.pixels[12..15], &[0, 0, 0]);
}

#[test]
fn empty_random_and_truncated_inputs_get_clear_errors() {
    let preprocessor = Preprocessor::new(PreprocessOptions::product_features());
    assert!(matches!(
        preprocessor.prepare(&[]),
        Err(VisionError::EmptyImage)
    ));

    let mut state = 0x1234_5678_u32;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 8) as u8
        })
        .collect();
    let error = preprocessor.prepare(&random).expect_err("random bytes");
    assert!(
        matches!(error, VisionError::UnrecognisedImageFormat { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("JPEG or PNG"));

    let text = b"<html>not an image</html>";
    assert!(matches!(
        preprocessor.prepare(text),
        Err(VisionError::UnrecognisedImageFormat { .. })
    ));

    let photo = product_photo(
        320,
        240,
        PixelBox {
            left: 10,
            top: 10,
            width: 200,
            height: 200,
        },
    );
    let jpeg = encode(&photo, ImageFormat::Jpeg);
    assert!(preprocessor.prepare(&jpeg).is_ok());
    for cut in [jpeg.len() / 2, jpeg.len() - 2, 300, 20, 3] {
        let error = preprocessor
            .prepare(&jpeg[..cut])
            .expect_err("a truncated JPEG must be refused");
        assert!(
            matches!(
                error,
                VisionError::ImageDecode { .. } | VisionError::UnrecognisedImageFormat { .. }
            ),
            "cut at {cut}: {error}"
        );
    }

    let png = encode(&photo, ImageFormat::Png);
    assert!(preprocessor.prepare(&png).is_ok());
    let error = preprocessor
        .prepare(&png[..png.len() / 2])
        .expect_err("a truncated PNG must be refused");
    assert!(matches!(error, VisionError::ImageDecode { .. }), "{error}");
}

#[test]
fn pixel_limit_is_checked_from_the_header() {
    let photo = product_photo(
        200,
        100,
        PixelBox {
            left: 10,
            top: 10,
            width: 50,
            height: 50,
        },
    );
    let jpeg = encode(&photo, ImageFormat::Jpeg);
    assert!(probe_image(&jpeg, 20_000).is_ok());
    let error = probe_image(&jpeg, 19_999).expect_err("over the limit");
    match error {
        VisionError::ImageTooLarge {
            width,
            height,
            pixels,
            limit,
        } => {
            assert_eq!((width, height, pixels, limit), (200, 100, 20_000, 19_999));
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn oversized_encodings_and_missing_files_are_refused() {
    let preprocessor = Preprocessor::new(PreprocessOptions {
        max_encoded_bytes: 100,
        ..PreprocessOptions::product_features()
    });
    let photo = product_photo(
        64,
        64,
        PixelBox {
            left: 8,
            top: 8,
            width: 20,
            height: 20,
        },
    );
    let png = encode(&photo, ImageFormat::Png);
    assert!(png.len() > 100);
    assert!(matches!(
        preprocessor.prepare(&png),
        Err(VisionError::EncodedImageTooLarge { limit: 100, .. })
    ));
    let directory =
        std::env::temp_dir().join(format!("prodcat-vision-files-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("photo.png");
    std::fs::write(&path, &png).expect("write");
    assert!(matches!(
        preprocessor.prepare_file(&path),
        Err(VisionError::EncodedImageTooLarge { .. })
    ));
    let relaxed = Preprocessor::new(PreprocessOptions::product_features());
    assert!(relaxed.prepare_file(&path).is_ok());
    let missing = relaxed
        .prepare_file(&directory.join("missing.jpg"))
        .expect_err("missing file");
    assert!(matches!(missing, VisionError::FileUnreadable { .. }));
    assert!(missing.to_string().contains("missing.jpg"));
    std::fs::remove_dir_all(&directory).expect("cleanup");
}

#[test]
fn the_shown_square_maps_the_prepared_picture_back_onto_the_photo() {
    // A wide product (300 x 100 at 50, 200) on a white 400 x 400 photo: the border crop keeps
    // the product with its margin, and padding makes a square as wide as that box, centred.
    let product = PixelBox {
        left: 50,
        top: 200,
        width: 300,
        height: 100,
    };
    let photo = picture(product_photo(400, 400, product));
    let preprocessor = Preprocessor::new(PreprocessOptions::product_features());
    let region = white_border_box(&photo, &BorderCropOptions::default());
    let square = preprocessor.shown_square(&photo);
    assert!((square.side - f64::from(region.width.max(region.height))).abs() < 1e-9);
    let centre_x = square.left + square.side / 2.0;
    let centre_y = square.top + square.side / 2.0;
    assert!((centre_x - 200.0).abs() <= 1.0, "{square:?}");
    assert!((centre_y - 250.0).abs() <= 1.0, "{square:?}");
    assert!(
        square.top < f64::from(region.top),
        "padded above: {square:?}"
    );

    // Without a border crop the centre crop shows the middle of the shorter side.
    let crop = Preprocessor::new(PreprocessOptions::imagenet_classification());
    let tall = picture(RgbImage::from_pixel(256, 512, Rgb([9, 9, 9])));
    let square = crop.shown_square(&tall);
    assert!((square.side - 224.0).abs() < 1e-9, "{square:?}");
    assert!((square.left - 16.0).abs() < 1e-9 && (square.top - 144.0).abs() < 1e-9);
}

#[test]
fn occlusion_hides_exactly_one_cell() {
    let preprocessor = Preprocessor::new(PreprocessOptions::product_features());
    let photo = picture(RgbImage::from_pixel(64, 64, Rgb([200, 30, 40])));
    let prepared = preprocessor.prepare_picture(&photo).expect("prepare");
    let side = prepared.side() as usize;
    let hidden = prepared.occluded(1, 2, 4);
    let cell = side / 4;
    let mut zeroed = 0;
    for y in 0..side {
        for x in 0..side {
            let at = (y * side + x) * 3;
            let inside = (cell..2 * cell).contains(&y) && (2 * cell..3 * cell).contains(&x);
            if inside {
                assert_eq!(&hidden.values()[at..at + 3], &[0.0, 0.0, 0.0]);
                zeroed += 1;
            } else {
                assert_eq!(&hidden.values()[at..at + 3], &prepared.values()[at..at + 3]);
            }
        }
    }
    assert_eq!(zeroed, cell * cell);
}

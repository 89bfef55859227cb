//! Image preparation: decode JPEG/PNG with size limits checked from the header before any
//! pixel is decoded, crop the white border around the product, resize to the backbone's input
//! size, and normalise as the backbone was trained (see [`crate::backbone`]) into the NHWC float
//! tensor the network takes.
//!
//! Two recipes:
//! - [`PreprocessOptions::imagenet_classification`] reproduces torchvision's evaluation
//!   transform (shorter side resized to 256 with antialiased bilinear filtering, centre crop
//!   224), used to check the network on known images; [`PreprocessOptions::
//!   imagenet_classification_for`] keeps the same crop fraction (size / (size + 32)) at another
//!   backbone's input size;
//! - [`PreprocessOptions::product_features`] is the recipe for catalogue photos: crop the white
//!   border, pad the product box to a square with white, resize to the input size, so the whole
//!   product is seen at the largest scale that fits (see the crate's benchmark notes for the
//!   comparison).
//!
//! A [`Preprocessor`] pairs the options with the backbone's [`NetworkInput`] (side and
//! normalisation); [`Preprocessor::new`] keeps MobileNetV2's 224 px and ImageNet mean/std.

use std::cell::RefCell;
use std::io::Cursor;

use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use crate::backbone::{BackboneKind, NetworkInput};
pub use crate::backbone::{IMAGENET_MEAN, IMAGENET_STD};
use crate::error::{Result, VisionError};
use crate::network::INPUT_SIZE;
/// Default decompression-bomb limit: 40 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// Default limit on the encoded size of one image: 32 MiB.
pub const DEFAULT_MAX_ENCODED_BYTES: u64 = 32 << 20;

/// How the (possibly border-cropped) picture is brought to the input size (224 x 224 for
/// MobileNetV2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeGeometry {
    /// Resize so the shorter side is `shorter_side` (torchvision truncates the longer side),
    /// then cut the centred input-size window (offsets rounded half to even as Python does).
    ShorterSideThenCenterCrop { shorter_side: u32 },
    /// Scale the longer side to the input size keeping the aspect ratio and centre the picture
    /// on a white square canvas.
    PadToSquare,
}

/// White-border detection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BorderCropOptions {
    /// A pixel is "near white" when every channel is at least `255 - tolerance`.
    pub tolerance: u8,
    /// Margin kept around the detected product, as a fraction (per mille) of the product
    /// box's longer side.
    pub margin_per_mille: u32,
}

impl Default for BorderCropOptions {
    fn default() -> Self {
        Self {
            tolerance: 16,
            margin_per_mille: 20,
        }
    }
}

/// Everything that controls preparation of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreprocessOptions {
    /// Images with more pixels than this are refused before decoding.
    pub max_pixels: u64,
    /// Encoded images (files, uploads) larger than this are refused before reading them.
    pub max_encoded_bytes: u64,
    /// `None` keeps the whole picture.
    pub border_crop: Option<BorderCropOptions>,
    pub geometry: ResizeGeometry,
}

impl PreprocessOptions {
    /// torchvision's ImageNet evaluation transform, no border crop.
    pub fn imagenet_classification() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_encoded_bytes: DEFAULT_MAX_ENCODED_BYTES,
            border_crop: None,
            geometry: ResizeGeometry::ShorterSideThenCenterCrop { shorter_side: 256 },
        }
    }

    /// torchvision's evaluation transform scaled to `backbone`'s input size: shorter side to
    /// size + 32, centre crop size (the original EfficientNet evaluation keeps the same
    /// fraction of the shorter side).
    pub fn imagenet_classification_for(backbone: BackboneKind) -> Self {
        Self {
            geometry: ResizeGeometry::ShorterSideThenCenterCrop {
                shorter_side: backbone.imagenet_shorter_side(),
            },
            ..Self::imagenet_classification()
        }
    }

    /// The recipe for product photos: white-border crop, pad to square, resize to the input
    /// size (the same for every backbone: the size comes from the [`Preprocessor`]).
    pub fn product_features() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_encoded_bytes: DEFAULT_MAX_ENCODED_BYTES,
            border_crop: Some(BorderCropOptions::default()),
            geometry: ResizeGeometry::PadToSquare,
        }
    }
}

impl Default for PreprocessOptions {
    fn default() -> Self {
        Self::product_features()
    }
}

/// A normalised 1 x side x side x 3 (NHWC) float image ready for the network.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    values: Vec<f32>,
    side: u32,
}

impl PreparedImage {
    /// Wrap already-normalised NHWC values (224 * 224 * 3 of them).
    pub fn from_values(values: Vec<f32>) -> Result<Self> {
        Self::from_values_with_side(values, INPUT_SIZE as u32)
    }

    /// Wrap already-normalised NHWC values of a `side` x `side` picture.
    pub fn from_values_with_side(values: Vec<f32>, side: u32) -> Result<Self> {
        let expected = side as usize * side as usize * 3;
        if side == 0 || values.len() != expected {
            return Err(VisionError::InputSizeMismatch {
                expected,
                actual: values.len(),
            });
        }
        Ok(Self { values, side })
    }

    /// The NHWC values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Side of the square picture, in pixels.
    pub fn side(&self) -> u32 {
        self.side
    }

    /// The same picture mirrored left to right.
    pub fn mirrored(&self) -> Self {
        let side = self.side as usize;
        let mut values = Vec::with_capacity(self.values.len());
        for row in self.values.chunks_exact(side * 3) {
            for pixel in row.chunks_exact(3).rev() {
                values.extend_from_slice(pixel);
            }
        }
        Self {
            values,
            side: self.side,
        }
    }

    /// The same picture with one cell of a `grid` x `grid` division hidden: its values set to
    /// zero, which after normalisation is the training pictures' mean colour (an occlusion
    /// that adds no edge or colour of its own).
    pub fn occluded(&self, row: usize, column: usize, grid: usize) -> Self {
        let side = self.side as usize;
        let grid = grid.clamp(1, side.max(1));
        let edge = |index: usize| index * side / grid;
        let (top, bottom) = (edge(row.min(grid - 1)), edge(row.min(grid - 1) + 1));
        let (left, right) = (edge(column.min(grid - 1)), edge(column.min(grid - 1) + 1));
        let mut values = self.values.clone();
        for y in top..bottom {
            values[(y * side + left) * 3..(y * side + right) * 3].fill(0.0);
        }
        Self {
            values,
            side: self.side,
        }
    }
}

/// The square of an original picture that a prepared image shows, in that picture's pixels.
/// Where the square was padded it reaches past the picture's edges (negative `left` or `top`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShownSquare {
    pub left: f64,
    pub top: f64,
    pub side: f64,
}

/// A decoded 8-bit RGB picture (row-major, 3 bytes per pixel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbPicture {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl RgbPicture {
    /// Build from raw RGB bytes; the length must be width * height * 3.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(VisionError::ImageDimensionZero { width, height });
        }
        let expected = width as usize * height as usize * 3;
        if pixels.len() != expected {
            return Err(VisionError::InputSizeMismatch {
                expected,
                actual: pixels.len(),
            });
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }
}

/// A rectangle inside a picture, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelBox {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

fn leading_bytes_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Format name for errors.
fn format_name(format: ImageFormat) -> String {
    format!("{format:?}").to_ascii_uppercase()
}

/// A JPEG whose last start-of-scan marker is not followed by an end-of-image marker was cut
/// short. (Inside entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so
/// 0xFFDA / 0xFFD9 pairs there are real markers.)
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let marker_position = |second: u8| {
        bytes
            .windows(2)
            .rposition(|pair| pair[0] == 0xFF && pair[1] == second)
    };
    match (marker_position(0xDA), marker_position(0xD9)) {
        (Some(scan), Some(end)) => end < scan,
        (Some(_), None) => true,
        (None, _) => true,
    }
}

/// Read only the header: format and dimensions, checked against `max_pixels`.
pub fn probe_image(bytes: &[u8], max_pixels: u64) -> Result<(ImageFormat, u32, u32)> {
    if bytes.is_empty() {
        return Err(VisionError::EmptyImage);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|error| VisionError::ImageDecode {
            format: "unknown".to_string(),
            reason: error.to_string(),
        })?;
    let format = match reader.format() {
        Some(format @ (ImageFormat::Jpeg | ImageFormat::Png)) => format,
        _ => {
            return Err(VisionError::UnrecognisedImageFormat {
                leading_bytes: leading_bytes_hex(bytes),
            })
        }
    };
    let (width, height) = reader
        .into_dimensions()
        .map_err(|error| VisionError::ImageDecode {
            format: format_name(format),
            reason: error.to_string(),
        })?;
    if width == 0 || height == 0 {
        return Err(VisionError::ImageDimensionZero { width, height });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(VisionError::ImageTooLarge {
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    Ok((format, width, height))
}

/// Decode JPEG or PNG bytes into RGB, refusing oversized images before decoding; transparent
/// pixels are composed over white.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<RgbPicture> {
    let (format, width, height) = probe_image(bytes, max_pixels)?;
    let decode_error = |reason: String| VisionError::ImageDecode {
        format: format_name(format),
        reason,
    };
    if format == ImageFormat::Jpeg && jpeg_is_truncated(bytes) {
        return Err(decode_error(
            "data ends before the end-of-image marker (truncated file)".to_string(),
        ));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // Output buffer (at most 16 bits x 4 channels per pixel) plus decoder working memory.
    limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + (64 << 20));
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|error| decode_error(error.to_string()))?;
    let picture = if decoded.color().has_alpha() {
        let rgba = decoded.into_rgba8();
        let mut pixels = Vec::with_capacity(rgba.width() as usize * rgba.height() as usize * 3);
        for pixel in rgba.pixels() {
            let alpha = u32::from(pixel[3]);
            for channel in 0..3 {
                let value = (u32::from(pixel[channel]) * alpha + 255 * (255 - alpha) + 127) / 255;
                pixels.push(value as u8);
            }
        }
        RgbPicture::new(rgba.width(), rgba.height(), pixels)?
    } else {
        let rgb = match decoded {
            DynamicImage::ImageRgb8(rgb) => rgb,
            other => other.into_rgb8(),
        };
        RgbPicture::new(rgb.width(), rgb.height(), rgb.into_raw())?
    };
    Ok(picture)
}

/// The box around everything that is not near-white, widened by the margin. Returns the whole
/// picture when it is entirely near-white (never crops to nothing).
pub fn white_border_box(picture: &RgbPicture, options: &BorderCropOptions) -> PixelBox {
    let width = picture.width as usize;
    let height = picture.height as usize;
    let threshold = 255u8.saturating_sub(options.tolerance);
    let whole = PixelBox {
        left: 0,
        top: 0,
        width: picture.width,
        height: picture.height,
    };
    let row = |y: usize| &picture.pixels[y * width * 3..(y + 1) * width * 3];
    let is_white = |pixel: &[u8]| pixel.iter().all(|&value| value >= threshold);
    let row_is_white = |y: usize| row(y).chunks_exact(3).all(is_white);

    let Some(top) = (0..height).find(|&y| !row_is_white(y)) else {
        return whole;
    };
    let bottom = (top..height)
        .rev()
        .find(|&y| !row_is_white(y))
        .unwrap_or(top);
    let column_is_white = |x: usize| (top..=bottom).all(|y| is_white(&row(y)[x * 3..x * 3 + 3]));
    let left = (0..width).find(|&x| !column_is_white(x)).unwrap_or(0);
    let right = (left..width)
        .rev()
        .find(|&x| !column_is_white(x))
        .unwrap_or(left);

    let content_width = right - left + 1;
    let content_height = bottom - top + 1;
    let margin =
        (content_width.max(content_height) * options.margin_per_mille as usize).div_ceil(1000);
    let left = left.saturating_sub(margin);
    let top = top.saturating_sub(margin);
    let right = (right + margin).min(width - 1);
    let bottom = (bottom + margin).min(height - 1);
    PixelBox {
        left: left as u32,
        top: top as u32,
        width: (right - left + 1) as u32,
        height: (bottom - top + 1) as u32,
    }
}

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

fn resize_error(error: impl std::fmt::Display) -> VisionError {
    VisionError::Resize {
        reason: error.to_string(),
    }
}

/// Resize the `source_box` region of `picture` into `destination` (RGB8) with antialiased
/// bilinear filtering (the same filter family as PIL's `BILINEAR`).
fn resize_region(
    picture: &RgbPicture,
    source_box: PixelBox,
    destination: &mut Image<'_>,
    destination_box: PixelBox,
) -> Result<()> {
    let source = ImageRef::new(
        picture.width,
        picture.height,
        &picture.pixels,
        PixelType::U8x3,
    )
    .map_err(resize_error)?;
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(
            f64::from(source_box.left),
            f64::from(source_box.top),
            f64::from(source_box.width),
            f64::from(source_box.height),
        );
    let mut target = CroppedImageMut::new(
        destination,
        destination_box.left,
        destination_box.top,
        destination_box.width,
        destination_box.height,
    )
    .map_err(resize_error)?;
    RESIZER.with(|resizer| {
        resizer
            .borrow_mut()
            .resize(&source, &mut target, &options)
            .map_err(resize_error)
    })
}

/// Bring the chosen region to 224 x 224 RGB8 according to `geometry`.
pub fn resize_to_input(
    picture: &RgbPicture,
    region: PixelBox,
    geometry: ResizeGeometry,
) -> Result<Vec<u8>> {
    resize_to_side(picture, region, geometry, INPUT_SIZE as u32)
}

/// Bring the chosen region to `side` x `side` RGB8 according to `geometry`.
pub fn resize_to_side(
    picture: &RgbPicture,
    region: PixelBox,
    geometry: ResizeGeometry,
    side: u32,
) -> Result<Vec<u8>> {
    if side == 0 {
        return Err(resize_error("the input side is zero"));
    }
    let side_pixels = side as usize;
    let value_count = side_pixels * side_pixels * 3;
    match geometry {
        ResizeGeometry::ShorterSideThenCenterCrop { shorter_side } => {
            let shorter_side = shorter_side.max(side);
            let (width, height) = (u64::from(region.width), u64::from(region.height));
            let (new_width, new_height) = if width <= height {
                (
                    u64::from(shorter_side),
                    u64::from(shorter_side) * height / width,
                )
            } else {
                (
                    u64::from(shorter_side) * width / height,
                    u64::from(shorter_side),
                )
            };
            let (new_width, new_height) = (new_width as u32, new_height as u32);
            let mut resized = Image::new(new_width, new_height, PixelType::U8x3);
            resize_region(
                picture,
                region,
                &mut resized,
                PixelBox {
                    left: 0,
                    top: 0,
                    width: new_width,
                    height: new_height,
                },
            )?;
            let offset = |length: u32| (f64::from(length - side) / 2.0).round_ties_even() as usize;
            let (left, top) = (offset(new_width), offset(new_height));
            let row_bytes = new_width as usize * 3;
            let mut output = Vec::with_capacity(value_count);
            for y in top..top + side_pixels {
                let start = y * row_bytes + left * 3;
                output.extend_from_slice(&resized.buffer()[start..start + side_pixels * 3]);
            }
            Ok(output)
        }
        ResizeGeometry::PadToSquare => {
            let longer = region.width.max(region.height);
            let scaled = |length: u32| {
                ((u64::from(length) * u64::from(side) + u64::from(longer) / 2) / u64::from(longer))
                    .clamp(1, u64::from(side)) as u32
            };
            let (new_width, new_height) = (scaled(region.width), scaled(region.height));
            let mut canvas =
                Image::from_vec_u8(side, side, vec![255u8; value_count], PixelType::U8x3)
                    .map_err(resize_error)?;
            resize_region(
                picture,
                region,
                &mut canvas,
                PixelBox {
                    left: (side - new_width) / 2,
                    top: (side - new_height) / 2,
                    width: new_width,
                    height: new_height,
                },
            )?;
            Ok(canvas.into_vec())
        }
    }
}

/// Scale 224 x 224 RGB8 to [0, 1] and apply ImageNet mean/std, keeping NHWC order.
pub fn normalize_imagenet(rgb: &[u8]) -> Result<PreparedImage> {
    normalize(rgb, BackboneKind::MobileNetV2.input())
}

/// Normalise `input.side` x `input.side` RGB8 as `input.normalization` says, keeping NHWC order.
pub fn normalize(rgb: &[u8], input: NetworkInput) -> Result<PreparedImage> {
    if rgb.len() != input.value_count() {
        return Err(VisionError::InputSizeMismatch {
            expected: input.value_count(),
            actual: rgb.len(),
        });
    }
    let table = input.normalization.lookup_table();
    let values = rgb
        .chunks_exact(3)
        .flat_map(|pixel| {
            [
                table[0][usize::from(pixel[0])],
                table[1][usize::from(pixel[1])],
                table[2][usize::from(pixel[2])],
            ]
        })
        .collect();
    PreparedImage::from_values_with_side(values, input.side)
}

/// Prepares encoded images for the network according to its options and input convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Preprocessor {
    pub options: PreprocessOptions,
    input: NetworkInput,
}

impl Preprocessor {
    /// MobileNetV2's input: 224 px, ImageNet mean/std.
    pub fn new(options: PreprocessOptions) -> Self {
        Self::with_input(options, NetworkInput::default())
    }

    /// Prepare images for `backbone`: its input size and normalisation.
    pub fn for_backbone(options: PreprocessOptions, backbone: BackboneKind) -> Self {
        Self::with_input(options, backbone.input())
    }

    /// Prepare images for any input side and normalisation.
    pub fn with_input(options: PreprocessOptions, input: NetworkInput) -> Self {
        Self { options, input }
    }

    /// The input side and normalisation produced.
    pub fn input(&self) -> NetworkInput {
        self.input
    }

    /// The part of `picture` that is kept: inside the white border when cropping it, else all.
    fn region(&self, picture: &RgbPicture) -> PixelBox {
        match &self.options.border_crop {
            Some(border) => white_border_box(picture, border),
            None => PixelBox {
                left: 0,
                top: 0,
                width: picture.width,
                height: picture.height,
            },
        }
    }

    /// Which square of `picture` [`Preprocessor::prepare_picture`] shows the network.
    pub fn shown_square(&self, picture: &RgbPicture) -> ShownSquare {
        let region = self.region(picture);
        let (left, top) = (f64::from(region.left), f64::from(region.top));
        let (width, height) = (f64::from(region.width), f64::from(region.height));
        let side = match self.options.geometry {
            ResizeGeometry::PadToSquare => width.max(height),
            ResizeGeometry::ShorterSideThenCenterCrop { shorter_side } => {
                // The crop keeps `input side` of `shorter_side` pixels of the shorter side.
                let kept =
                    f64::from(self.input.side) / f64::from(shorter_side.max(self.input.side));
                width.min(height) * kept
            }
        };
        ShownSquare {
            left: left + (width - side) / 2.0,
            top: top + (height - side) / 2.0,
            side,
        }
    }

    /// Decode, crop, resize and normalise encoded JPEG/PNG bytes.
    pub fn prepare(&self, bytes: &[u8]) -> Result<PreparedImage> {
        self.check_encoded_size(bytes.len() as u64)?;
        let picture = decode_image(bytes, self.options.max_pixels)?;
        self.prepare_picture(&picture)
    }

    /// Refuse encoded inputs above `max_encoded_bytes`.
    pub fn check_encoded_size(&self, bytes: u64) -> Result<()> {
        if bytes > self.options.max_encoded_bytes {
            return Err(VisionError::EncodedImageTooLarge {
                bytes,
                limit: self.options.max_encoded_bytes,
            });
        }
        Ok(())
    }

    /// Read an image file, refusing it from its size before reading, then prepare it.
    pub fn prepare_file(&self, path: &std::path::Path) -> Result<PreparedImage> {
        let unreadable = |source| VisionError::FileUnreadable {
            path: path.to_path_buf(),
            source,
        };
        let length = std::fs::metadata(path).map_err(unreadable)?.len();
        self.check_encoded_size(length)?;
        let bytes = std::fs::read(path).map_err(unreadable)?;
        self.prepare(&bytes)
    }

    /// Crop, resize and normalise an already decoded picture.
    pub fn prepare_picture(&self, picture: &RgbPicture) -> Result<PreparedImage> {
        let region = self.region(picture);
        let rgb = resize_to_side(picture, region, self.options.geometry, self.input.side)?;
        normalize(&rgb, self.input)
    }
}

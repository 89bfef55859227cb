//! Image features from raw RGB pixels: size, mean brightness and the share of the picture
//! taken by a near-white border around the product (Rakuten photos are often padded).

use serde::{Deserialize, Serialize};

use crate::error::{DriftError, Result};

/// A channel value at or above this counts as white when all three channels reach it.
pub const NEAR_WHITE_LEVEL: u8 = 240;

/// Features of one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStats {
    pub width: u32,
    pub height: u32,
    /// Mean Rec. 601 luma, 0 (black) to 255 (white).
    pub mean_brightness: f64,
    /// Share of the area outside the bounding box of non-white pixels (1.0 for an all-white
    /// image, 0.0 when content touches all four edges).
    pub white_border_ratio: f64,
}

impl ImageStats {
    /// Computes the features from `width * height * 3` interleaved RGB bytes.
    pub fn from_rgb(width: u32, height: u32, pixels: &[u8]) -> Result<Self> {
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 {
            return Err(DriftError::InvalidInput(format!(
                "image of size {width}x{height} has no pixels"
            )));
        }
        let expected = w
            .checked_mul(h)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| {
                DriftError::InvalidInput(format!("image of size {width}x{height} is too large"))
            })?;
        if pixels.len() != expected {
            return Err(DriftError::InvalidInput(format!(
                "image of size {width}x{height} needs {expected} RGB bytes, got {}",
                pixels.len()
            )));
        }
        let mut luma_sum = 0.0;
        let (mut min_x, mut min_y, mut max_x, mut max_y) = (usize::MAX, usize::MAX, 0usize, 0usize);
        for (index, rgb) in pixels.chunks_exact(3).enumerate() {
            let (r, g, b) = (rgb[0], rgb[1], rgb[2]);
            luma_sum += 0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64;
            let white = r >= NEAR_WHITE_LEVEL && g >= NEAR_WHITE_LEVEL && b >= NEAR_WHITE_LEVEL;
            if !white {
                let (x, y) = (index % w, index / w);
                min_x = min_x.min(x);
                max_x = max_x.max(x);
                min_y = min_y.min(y);
                max_y = max_y.max(y);
            }
        }
        let area = (w * h) as f64;
        let white_border_ratio = if min_x == usize::MAX {
            1.0
        } else {
            1.0 - ((max_x - min_x + 1) * (max_y - min_y + 1)) as f64 / area
        };
        Ok(Self {
            width,
            height,
            mean_brightness: luma_sum / area,
            white_border_ratio,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_square_has_the_expected_border() {
        // 10x10 white image with a 4x5 black block: border = 1 - 20/100.
        let mut pixels = vec![255u8; 10 * 10 * 3];
        for y in 2..7 {
            for x in 3..7 {
                let i = (y * 10 + x) * 3;
                pixels[i..i + 3].copy_from_slice(&[0, 0, 0]);
            }
        }
        let stats = ImageStats::from_rgb(10, 10, &pixels).unwrap();
        assert!((stats.white_border_ratio - 0.8).abs() < 1e-12);
        assert!((stats.mean_brightness - 255.0 * 0.8).abs() < 1e-9);
        assert!(ImageStats::from_rgb(10, 10, &pixels[..10]).is_err());
        assert!(ImageStats::from_rgb(0, 10, &[]).is_err());
    }
}

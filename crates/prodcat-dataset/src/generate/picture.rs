//! Renders a generated product photo: a white 500x500 canvas with a margin, and inside it a shape
//! whose form, palette and texture depend on the category, with per-product jitter and noise.

use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use prodcat_domain::CategoryCode;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const SIZE: u32 = 500;

fn hsv_to_rgb(hue: f32, saturation: f32, value: f32) -> [f32; 3] {
    let h = (hue.rem_euclid(360.0)) / 60.0;
    let c = value * saturation;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = value - c;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

/// The visual style of a category: base hue, shape, texture frequency.
struct Style {
    hue: f32,
    shape: u32,
    texture: u32,
    stripes: f32,
}

fn style_of(category_index: usize) -> Style {
    Style {
        hue: (category_index as f32 * 137.5) % 360.0,
        shape: (category_index % 7) as u32,
        texture: ((category_index / 7) % 4) as u32,
        stripes: 6.0 + (category_index % 5) as f32 * 5.0,
    }
}

fn inside_shape(shape: u32, u: f32, v: f32) -> bool {
    // u, v in [-1, 1] relative to the product's box.
    match shape {
        0 => true,
        1 => u * u + v * v <= 1.0,
        2 => v >= 2.0 * u.abs() - 1.0,
        3 => (u.abs() < 0.9 && v.abs() < 0.55) || (u.abs() < 0.5 && v.abs() < 0.95),
        4 => {
            let r = (u * u + v * v).sqrt();
            (0.55..=1.0).contains(&r)
        }
        5 => u.abs() < 0.3 || v.abs() < 0.3,
        _ => u.abs() + v.abs() <= 1.0,
    }
}

/// Renders and encodes one product photo.
pub fn render_product_jpeg(category: CategoryCode, rng: &mut ChaCha8Rng) -> Vec<u8> {
    // One photo in ten looks like another category's (real photos are ambiguous too).
    let style_index = if rng.gen_bool(0.1) {
        rng.gen_range(0..27)
    } else {
        category.index()
    };
    let style = style_of(style_index);
    let left = rng.gen_range(20..140) as f32;
    let top = rng.gen_range(20..140) as f32;
    let right = SIZE as f32 - rng.gen_range(20..140) as f32;
    let bottom = SIZE as f32 - rng.gen_range(20..140) as f32;
    let hue = style.hue + rng.gen_range(-18.0..18.0);
    let primary = hsv_to_rgb(hue, rng.gen_range(0.55..0.95), rng.gen_range(0.55..0.95));
    let secondary = hsv_to_rgb(
        hue + 180.0,
        rng.gen_range(0.3..0.8),
        rng.gen_range(0.3..0.9),
    );
    let angle: f32 = rng.gen_range(0.0..std::f32::consts::PI);
    let (sin, cos) = angle.sin_cos();
    let frequency = style.stripes * rng.gen_range(0.8..1.25);
    let noise_seed: u32 = rng.gen();
    let mut picture = RgbImage::from_pixel(SIZE, SIZE, Rgb([255, 255, 255]));
    let width = right - left;
    let height = bottom - top;
    for y in top as u32..bottom as u32 {
        for x in left as u32..right as u32 {
            let u = ((x as f32 - left) / width) * 2.0 - 1.0;
            let v = ((y as f32 - top) / height) * 2.0 - 1.0;
            if !inside_shape(style.shape, u, v) {
                continue;
            }
            let along = u * cos + v * sin;
            let pattern = match style.texture {
                0 => ((along * frequency).sin() * 0.5 + 0.5).round(),
                1 => (((u * frequency).sin() * (v * frequency).sin()) * 0.5 + 0.5).round(),
                2 => (along * 0.5 + 0.5).clamp(0.0, 1.0),
                _ => ((u * u + v * v).sqrt() * frequency * 0.5).sin() * 0.5 + 0.5,
            };
            let shade = 0.75 + 0.25 * (1.0 - v.abs());
            let hash = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ noise_seed)
                .wrapping_mul(2_654_435_761);
            let noise = ((hash >> 24) as f32 / 255.0 - 0.5) * 24.0;
            let mut pixel = [0u8; 3];
            for channel in 0..3 {
                let value =
                    primary[channel] * (1.0 - pattern * 0.6) + secondary[channel] * pattern * 0.6;
                pixel[channel] = (value * shade + noise).clamp(0.0, 250.0) as u8;
            }
            picture.put_pixel(x, y, Rgb(pixel));
        }
    }
    let mut bytes = Vec::with_capacity(40_000);
    let encoder = JpegEncoder::new_with_quality(&mut bytes, 85);
    // Encoding an in-memory RGB buffer of the right size cannot fail.
    let _ = picture.write_with_encoder(encoder);
    bytes
}

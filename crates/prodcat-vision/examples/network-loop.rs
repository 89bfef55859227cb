//! Runs the network repeatedly on one prepared image on one thread: a steady loop to profile
//! (`perf record`) and a quick single-core images/s figure.
//!
//! `cargo run --release -p prodcat-vision --example network-loop -- [iterations]`

use std::time::Instant;

use anyhow::{Context, Result};
use prodcat_vision::network::MULTIPLY_ADDS_PER_IMAGE;
use prodcat_vision::{default_mobilenet_directory, MobileNetV2, PreparedImage, INPUT_SIZE};

fn main() -> Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|text| text.parse())
        .transpose()
        .context("iterations must be a number")?
        .unwrap_or(200);
    let network = MobileNetV2::load(&default_mobilenet_directory())?;
    let values: Vec<f32> = (0..INPUT_SIZE * INPUT_SIZE * 3)
        .map(|index| ((index * 7919) % 255) as f32 / 127.0 - 1.0)
        .collect();
    let image = PreparedImage::from_values(values)?;
    network.run(&image)?;
    let started = Instant::now();
    for _ in 0..iterations {
        network.run(&image)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = iterations as f64 / seconds;
    println!(
        "{iterations} runs in {seconds:.2} s: {rate:.1} images/s, {:.1} GFLOP/s on one thread",
        rate * 2.0 * MULTIPLY_ADDS_PER_IMAGE / 1e9
    );
    Ok(())
}

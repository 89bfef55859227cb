//! Elementwise and row-wise float operations of the encoder (layer norm, GELU, softmax, dot
//! products), written as branch-free loops over fixed-width lanes so the compiler vectorises
//! them, and compiled once per instruction set with run-time selection.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// The widest instruction set the running CPU offers, among those the crate has code for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstructionSet {
    /// AVX-512 (F, BW, VL) with VNNI integer dot products.
    Avx512Vnni,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// Portable code only.
    Portable,
}

/// The widest instruction set the kernels may use, as set by [`InstructionSet::set_limit`]
/// (its [`InstructionSet::rank`]; `u8::MAX` when there is no limit).
static LIMIT: AtomicU8 = AtomicU8::new(u8::MAX);

impl InstructionSet {
    /// The set the kernels use: the widest the CPU supports (detected once), narrowed to the
    /// limit set with [`InstructionSet::set_limit`], if any.
    pub fn detect() -> Self {
        static DETECTED: OnceLock<InstructionSet> = OnceLock::new();
        let best = *DETECTED.get_or_init(Self::best_supported);
        match LIMIT.load(Ordering::Relaxed) {
            0 => InstructionSet::Portable,
            1 if best != InstructionSet::Portable => InstructionSet::Avx2,
            _ => best,
        }
    }

    /// Narrows the kernels of this whole process to at most `limit` (`None` lifts the limit),
    /// for comparing code paths; the binary or a test calls it before embedding anything. A
    /// limit wider than the CPU supports changes nothing.
    pub fn set_limit(limit: Option<InstructionSet>) {
        LIMIT.store(limit.map_or(u8::MAX, Self::rank), Ordering::Relaxed);
    }

    /// The set named `portable`, `avx2` or `avx512-vnni` (as [`InstructionSet::name`] gives).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "portable" => Some(InstructionSet::Portable),
            "avx2" => Some(InstructionSet::Avx2),
            "avx512-vnni" => Some(InstructionSet::Avx512Vnni),
            _ => None,
        }
    }

    /// Orders the sets from narrowest (0) to widest.
    fn rank(self) -> u8 {
        match self {
            InstructionSet::Portable => 0,
            InstructionSet::Avx2 => 1,
            InstructionSet::Avx512Vnni => 2,
        }
    }

    /// The widest set the CPU supports, whatever the limit.
    pub fn best_supported() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return InstructionSet::Avx512Vnni;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return InstructionSet::Avx2;
            }
        }
        InstructionSet::Portable
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            InstructionSet::Avx512Vnni => "avx512-vnni",
            InstructionSet::Avx2 => "avx2",
            InstructionSet::Portable => "portable",
        }
    }
}

/// Defines `pub(crate) fn $name(...)` that runs `$body` compiled for the detected instruction
/// set. `$body` must be `#[inline(always)]` so each copy is specialised.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($argument:ident : $type:ty),* $(,)?) $(-> $return:ty)? = $body:ident) => {
        $(#[$meta])*
        pub(crate) fn $name($($argument: $type),*) $(-> $return)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
                unsafe fn wide($($argument: $type),*) $(-> $return)? {
                    $body($($argument),*)
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn narrow($($argument: $type),*) $(-> $return)? {
                    $body($($argument),*)
                }
                match $crate::math::InstructionSet::detect() {
                    // SAFETY: the CPU supports the enabled features (checked at detection).
                    $crate::math::InstructionSet::Avx512Vnni => return unsafe { wide($($argument),*) },
                    // SAFETY: as above.
                    $crate::math::InstructionSet::Avx2 => return unsafe { narrow($($argument),*) },
                    $crate::math::InstructionSet::Portable => {}
                }
            }
            $body($($argument),*)
        }
    };
}
pub(crate) use multiversion;

const LANES: usize = 16;

/// e^x for f32, branch-free (range reduction to 2^n · e^r, degree-6 polynomial on
/// |r| ≤ ln2/2; relative error below 2e-7 on the clamped range).
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HIGH: f32 = 0.693_145_75;
    const LN2_LOW: f32 = 1.428_606_8e-6;
    // Rounds to nearest through the float mantissa (valid for |v| < 2^22).
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    // After adding ROUNDER the low mantissa bits hold n = round(x · log2 e) as an integer, so
    // 2^n is built with integer operations only (no float-to-int conversion).
    let shifted = x * LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let polynomial = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let exponent = shifted
        .to_bits()
        .wrapping_sub(ROUNDER.to_bits())
        .wrapping_add(127)
        << 23;
    polynomial * f32::from_bits(exponent)
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
pub(crate) fn erf_approx(x: f32) -> f32 {
    let magnitude = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * magnitude);
    let polynomial = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let value = 1.0 - polynomial * exp_approx(-magnitude * magnitude);
    value.copysign(x)
}

#[inline(always)]
fn gelu_body(values: &mut [f32]) {
    for value in values.iter_mut() {
        let x = *value;
        *value = 0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

multiversion! {
    /// GELU (the exact erf form BERT uses) in place.
    fn gelu(values: &mut [f32]) = gelu_body
}

#[inline(always)]
fn sum_lanes(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, value) in lanes.iter_mut().zip(chunk) {
            *lane += *value;
        }
    }
    let mut total = lanes.iter().sum::<f32>();
    for value in chunks.remainder() {
        total += *value;
    }
    total
}

#[inline(always)]
fn add_layer_norm_body(
    hidden: &mut [f32],
    residual: Option<&[f32]>,
    weight: &[f32],
    bias: &[f32],
    width: usize,
    epsilon: f32,
) {
    for (row_index, row) in hidden.chunks_exact_mut(width).enumerate() {
        if let Some(residual) = residual {
            let other = &residual[row_index * width..(row_index + 1) * width];
            for (value, added) in row.iter_mut().zip(other) {
                *value += *added;
            }
        }
        let mean = sum_lanes(row) / width as f32;
        let mut lanes = [0.0f32; LANES];
        for chunk in row.chunks_exact(LANES) {
            for (lane, value) in lanes.iter_mut().zip(chunk) {
                let centred = *value - mean;
                *lane += centred * centred;
            }
        }
        let mut variance_sum = lanes.iter().sum::<f32>();
        for value in row.chunks_exact(LANES).remainder() {
            variance_sum += (*value - mean) * (*value - mean);
        }
        let inverse = 1.0 / (variance_sum / width as f32 + epsilon).sqrt();
        for ((value, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *value = (*value - mean) * inverse * *w + *b;
        }
    }
}

multiversion! {
    /// `hidden = LayerNorm(hidden + residual)` row by row (`residual` may be absent).
    fn add_layer_norm(
        hidden: &mut [f32],
        residual: Option<&[f32]>,
        weight: &[f32],
        bias: &[f32],
        width: usize,
        epsilon: f32,
    ) = add_layer_norm_body
}

/// One attention head over one sequence: `queries`, `keys` and `values` hold the sequence's
/// `length` rows with `stride` floats between rows and the head's `head_size` values at the
/// start of each row slice; scores are scaled by `scale`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadInput<'a> {
    pub queries: &'a [f32],
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub stride: usize,
    pub length: usize,
    pub head_size: usize,
    pub scale: f32,
}

/// Scaled dot-product attention of one head over one sequence; `context` receives
/// `length × head_size` values. `scratch` is reused between calls.
///
/// The head's slices and sizes travel as one [`HeadInput`]: it is taken apart on entry, so the
/// loops below see the same locals as with separate arguments (the kernel runs at the same
/// speed, measured over 2,400 heads of 96 tokens).
#[inline(always)]
fn attention_head_body(head: HeadInput<'_>, context: &mut [f32], scratch: &mut Vec<f32>) {
    let HeadInput {
        queries,
        keys,
        values,
        stride,
        length,
        head_size,
        scale,
    } = head;
    // Keys transposed to [head_size × padded length] (zero padding to whole lanes), so the
    // scores of LANES keys accumulate in registers across the head's dimensions.
    let padded = length.div_ceil(LANES) * LANES;
    scratch.clear();
    scratch.resize(head_size * padded + padded + head_size, 0.0);
    let (keys_transposed, rest) = scratch.split_at_mut(head_size * padded);
    let (scores, scaled_query) = rest.split_at_mut(padded);
    for position in 0..length {
        let key = &keys[position * stride..position * stride + head_size];
        for (dimension, value) in key.iter().enumerate() {
            keys_transposed[dimension * padded + position] = *value;
        }
    }
    for query_index in 0..length {
        let query = &queries[query_index * stride..query_index * stride + head_size];
        for (scaled, q) in scaled_query.iter_mut().zip(query) {
            *scaled = *q * scale;
        }
        for (chunk_index, chunk) in scores.chunks_exact_mut(LANES).enumerate() {
            let mut lanes = [0.0f32; LANES];
            for (dimension, q) in scaled_query.iter().enumerate() {
                let start = dimension * padded + chunk_index * LANES;
                let keys_row = &keys_transposed[start..start + LANES];
                for (lane, k) in lanes.iter_mut().zip(keys_row) {
                    *lane += *q * *k;
                }
            }
            chunk.copy_from_slice(&lanes);
        }
        let scores = &mut scores[..length];
        let mut maximum = f32::NEG_INFINITY;
        for score in scores.iter() {
            maximum = if *score > maximum { *score } else { maximum };
        }
        for score in scores.iter_mut() {
            *score = exp_approx(*score - maximum);
        }
        let inverse = 1.0 / sum_lanes(scores);
        let out = &mut context[query_index * head_size..(query_index + 1) * head_size];
        if head_size == 32 {
            // The common case: the 32 outputs stay in registers over the whole sequence.
            let mut accumulators = [0.0f32; 32];
            for (position, probability) in scores.iter().enumerate() {
                let value = &values[position * stride..position * stride + 32];
                for (accumulator, v) in accumulators.iter_mut().zip(value) {
                    *accumulator += *probability * *v;
                }
            }
            for (target, accumulator) in out.iter_mut().zip(&accumulators) {
                *target = *accumulator * inverse;
            }
        } else {
            out.fill(0.0);
            for (position, probability) in scores.iter().enumerate() {
                let value = &values[position * stride..position * stride + head_size];
                for (accumulator, v) in out.iter_mut().zip(value) {
                    *accumulator += *probability * *v;
                }
            }
            out.iter_mut().for_each(|value| *value *= inverse);
        }
    }
}

multiversion! {
    /// See `attention_head_body`.
    fn attention_head(
        head: HeadInput<'_>,
        context: &mut [f32],
        scratch: &mut Vec<f32>,
    ) = attention_head_body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_narrows_the_detected_set() {
        let best = InstructionSet::best_supported();
        assert_eq!(InstructionSet::detect(), best);
        InstructionSet::set_limit(Some(InstructionSet::Portable));
        assert_eq!(InstructionSet::detect(), InstructionSet::Portable);
        InstructionSet::set_limit(Some(InstructionSet::Avx512Vnni));
        assert_eq!(
            InstructionSet::detect(),
            best,
            "a wider limit changes nothing"
        );
        InstructionSet::set_limit(None);
        assert_eq!(InstructionSet::detect(), best);
        for set in [
            InstructionSet::Portable,
            InstructionSet::Avx2,
            InstructionSet::Avx512Vnni,
        ] {
            assert_eq!(InstructionSet::parse(set.name()), Some(set));
        }
    }

    #[test]
    fn exp_matches_the_standard_library() {
        let mut worst = 0.0f32;
        let mut x = -80.0f32;
        while x < 80.0 {
            let relative = (exp_approx(x) - x.exp()).abs() / x.exp();
            worst = worst.max(relative);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!((exp_approx(-1000.0) / (-87.0f32).exp() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, expected) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-1.0, -0.842_700_8),
            (2.0, 0.995_322_3),
            (-3.5, -0.999_999_3),
            (6.0, 1.0),
        ] {
            assert!(
                (erf_approx(x) - expected).abs() < 3e-7,
                "erf({x}) = {}",
                erf_approx(x)
            );
        }
    }

    #[test]
    fn layer_norm_normalises_each_row() {
        let mut hidden = vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        let residual = vec![1.0; 8];
        add_layer_norm(&mut hidden, Some(&residual), &[1.0; 4], &[0.5; 4], 4, 1e-12);
        let expected = [-1.341_640_8, -0.447_213_6, 0.447_213_6, 1.341_640_8];
        for (value, expected) in hidden[..4].iter().zip(expected) {
            assert!((value - 0.5 - expected).abs() < 1e-5);
        }
        assert!(hidden[4..].iter().all(|value| (value - 0.5).abs() < 1e-5));
    }

    #[test]
    fn attention_head_matches_a_direct_computation() {
        // Head size 4 takes the general path, 32 the register-resident one; lengths cover
        // partial and whole lanes.
        for (length, head_size, stride) in [(5usize, 4usize, 6usize), (19, 32, 96), (16, 32, 64)] {
            let pseudo = |index: usize| ((index * 7919 % 1000) as f32 / 500.0) - 1.0;
            let queries: Vec<f32> = (0..length * stride).map(pseudo).collect();
            let keys: Vec<f32> = (0..length * stride).map(|i| pseudo(i + 17)).collect();
            let values: Vec<f32> = (0..length * stride).map(|i| pseudo(i + 101)).collect();
            let mut context = vec![0.0; length * head_size];
            let mut scratch = Vec::new();
            let head = HeadInput {
                queries: &queries,
                keys: &keys,
                values: &values,
                stride,
                length,
                head_size,
                scale: 0.5,
            };
            attention_head(head, &mut context, &mut scratch);
            for i in 0..length {
                let scores: Vec<f64> = (0..length)
                    .map(|j| {
                        (0..head_size)
                            .map(|d| queries[i * stride + d] as f64 * keys[j * stride + d] as f64)
                            .sum::<f64>()
                            * 0.5
                    })
                    .collect();
                let maximum = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - maximum).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..head_size {
                    let expected: f64 = (0..length)
                        .map(|j| weights[j] / total * values[j * stride + d] as f64)
                        .sum();
                    let got = context[i * head_size + d] as f64;
                    assert!(
                        (got - expected).abs() < 1e-5,
                        "length {length} head {head_size}: {got} vs {expected}"
                    );
                }
            }
        }
    }
}

//! 4-bit weight × 8-bit activation matrix products, the encoder's hot path.
//!
//! Weights arrive as Q4_0 blocks (32 weights sharing an fp16 scale, stored as `nibble - 8`).
//! At load they are repacked per row into pairs of blocks: 32 bytes whose low nibbles are the
//! first block's weights in order and whose high nibbles are the second block's, with the
//! scales as `f32`. Activations are quantised per token and per 32-value block to `i8` with a
//! scale (`max |x| / 127`, round to nearest even), as the reference engine does. Each output is
//!
//! `bias + Σ_blocks scale_w · scale_a · (Σ_j nibble_j · a_j − 8 · Σ_j a_j)`
//!
//! where the inner sums are exact integers. AVX-512 VNNI computes 64 products per instruction
//! (`vpdpbusd`, unsigned nibbles × signed activations), AVX2 uses `vpmaddubsw`; a portable
//! loop is the fallback and the definition the others are tested against.

use std::ops::Range;

use crate::math::{multiversion, InstructionSet};
use crate::model_file::{f16_to_f32, BLOCK_BYTES, BLOCK_SIZE};

/// Rows of weights handled together by the kernels (every matrix has a multiple of 4 rows).
pub(crate) const ROW_TILE: usize = 4;

/// A weight matrix `[rows × columns]` (outputs × inputs) in the repacked 4-bit layout.
#[derive(Debug, Clone)]
pub(crate) struct QuantizedMatrix {
    pub rows: usize,
    pub columns: usize,
    /// `rows × columns / 2` bytes: per row, per pair of blocks, 32 bytes of two nibbles.
    packed: Vec<u8>,
    /// `rows × columns / 32` block scales.
    scales: Vec<f32>,
}

/// Unsigned 4-bit value (0..=15) of weight `index` (0..32) of a Q4_0 block.
fn q4_nibble(block: &[u8], index: usize) -> u8 {
    let quants = &block[2..BLOCK_BYTES];
    if index < 16 {
        quants[index] & 0x0f
    } else {
        quants[index - 16] >> 4
    }
}

/// Scale of a Q4_0 block.
fn q4_scale(block: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([block[0], block[1]]))
}

/// Dequantises one Q4_0 row (`columns` weights) into `out`.
pub(crate) fn dequantize_q4_row(row: &[u8], out: &mut [f32]) {
    for (block, values) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK_SIZE))
    {
        let scale = q4_scale(block);
        for (index, value) in values.iter_mut().enumerate() {
            *value = (q4_nibble(block, index) as i32 - 8) as f32 * scale;
        }
    }
}

impl QuantizedMatrix {
    /// Repacks Q4_0 rows. `raw` must hold `rows × columns / 32` blocks; `columns` must be a
    /// multiple of 64 and `rows` a multiple of [`ROW_TILE`] (checked by the caller).
    pub fn from_q4_blocks(raw: &[u8], rows: usize, columns: usize) -> Self {
        let blocks_per_row = columns / BLOCK_SIZE;
        debug_assert_eq!(raw.len(), rows * blocks_per_row * BLOCK_BYTES);
        let mut packed = Vec::with_capacity(rows * columns / 2);
        let mut scales = Vec::with_capacity(rows * blocks_per_row);
        for row in raw.chunks_exact(blocks_per_row * BLOCK_BYTES) {
            for pair in row.chunks_exact(2 * BLOCK_BYTES) {
                let (first, second) = pair.split_at(BLOCK_BYTES);
                scales.push(q4_scale(first));
                scales.push(q4_scale(second));
                for index in 0..BLOCK_SIZE {
                    packed.push(q4_nibble(first, index) | (q4_nibble(second, index) << 4));
                }
            }
        }
        Self {
            rows,
            columns,
            packed,
            scales,
        }
    }

    /// Unsigned nibble of weight (`row`, `column`).
    #[cfg(test)]
    fn nibble(&self, row: usize, column: usize) -> i32 {
        let pair = column / (2 * BLOCK_SIZE);
        let within = column % (2 * BLOCK_SIZE);
        let byte = self.packed[row * self.columns / 2 + pair * BLOCK_SIZE + within % BLOCK_SIZE];
        (if within < BLOCK_SIZE {
            byte & 0x0f
        } else {
            byte >> 4
        }) as i32
    }

    /// Dequantised weight, for tests.
    #[cfg(test)]
    pub fn weight(&self, row: usize, column: usize) -> f32 {
        (self.nibble(row, column) - 8) as f32
            * self.scales[row * self.columns / BLOCK_SIZE + column / BLOCK_SIZE]
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.packed.len() + 4 * self.scales.len()
    }
}

/// Activations `[tokens × columns]` quantised per 32-value block.
///
/// Stored pair-major: block `b` of token `t` is slot `(b / 2 · tokens + t) · 2 + b % 2`, so
/// the two blocks of a pair are adjacent and consecutive tokens of one pair sit 64 bytes
/// apart (the kernels then address a tile of tokens from a single pointer).
#[derive(Debug, Default, Clone)]
pub(crate) struct QuantizedActivations {
    pub tokens: usize,
    pub columns: usize,
    /// 32 values per slot.
    values: Vec<i8>,
    /// One scale per slot.
    scales: Vec<f32>,
    /// Minus the block's integer sum, per slot: added to each of the 8 dot-product lanes of
    /// the block it removes the `8 · Σ a` offset of the unsigned nibbles.
    corrections: Vec<i32>,
    /// `scales` and `corrections` repeated 8 times each (one per 32-bit lane of a block's
    /// dot product), so the AVX-512 kernel loads them as ready vectors.
    lane_scales: Vec<f32>,
    lane_corrections: Vec<i32>,
}

/// Slot of block `block` of token `token` among `tokens` tokens.
#[inline(always)]
fn slot(tokens: usize, token: usize, block: usize) -> usize {
    (block / 2 * tokens + token) * 2 + block % 2
}

#[inline(always)]
fn quantize_body(
    input: &[f32],
    tokens: usize,
    columns: usize,
    values: &mut [i8],
    scales: &mut [f32],
    corrections: &mut [i32],
) {
    let blocks = columns / BLOCK_SIZE;
    for token in 0..tokens {
        for block_index in 0..blocks {
            let start = token * columns + block_index * BLOCK_SIZE;
            let block = &input[start..start + BLOCK_SIZE];
            let target = slot(tokens, token, block_index);
            let quantized = &mut values[target * BLOCK_SIZE..(target + 1) * BLOCK_SIZE];
            let mut lanes = [0.0f32; 8];
            for chunk in block.chunks_exact(8) {
                for (lane, value) in lanes.iter_mut().zip(chunk) {
                    let magnitude = value.abs();
                    *lane = if magnitude > *lane { magnitude } else { *lane };
                }
            }
            let maximum = lanes
                .iter()
                .fold(0.0f32, |a, b| if *b > a { *b } else { a });
            let step = maximum / 127.0;
            let inverse = if step > 0.0 { 1.0 / step } else { 0.0 };
            let mut sum = 0i32;
            for (value, out) in block.iter().zip(quantized.iter_mut()) {
                let rounded = (value * inverse).round_ties_even().clamp(-128.0, 127.0) as i32;
                *out = rounded as i8;
                sum += rounded;
            }
            scales[target] = step;
            corrections[target] = -sum;
        }
    }
}

multiversion! {
    fn quantize_blocks(
        input: &[f32],
        tokens: usize,
        columns: usize,
        values: &mut [i8],
        scales: &mut [f32],
        corrections: &mut [i32],
    ) = quantize_body
}

impl QuantizedActivations {
    /// Quantises `input` (`tokens × columns`, columns a multiple of 64) into this buffer.
    pub fn quantize(&mut self, input: &[f32], tokens: usize, columns: usize) {
        assert_eq!(input.len(), tokens * columns, "activation size");
        assert!(columns.is_multiple_of(2 * BLOCK_SIZE), "activation width");
        let blocks = tokens * columns / BLOCK_SIZE;
        self.tokens = tokens;
        self.columns = columns;
        self.values.resize(tokens * columns, 0);
        self.scales.resize(blocks, 0.0);
        self.corrections.resize(blocks, 0);
        self.lane_scales.resize(8 * blocks, 0.0);
        self.lane_corrections.resize(8 * blocks, 0);
        #[cfg(target_arch = "x86_64")]
        if InstructionSet::detect() == InstructionSet::Avx512Vnni {
            // SAFETY: AVX-512 F/BW were detected; the buffers were sized above.
            unsafe { x86::quantize_avx512(input, self) };
            return;
        }
        quantize_blocks(
            input,
            tokens,
            columns,
            &mut self.values[..tokens * columns],
            &mut self.scales[..blocks],
            &mut self.corrections[..blocks],
        );
        for block in 0..blocks {
            self.lane_scales[8 * block..8 * block + 8].fill(self.scales[block]);
            self.lane_corrections[8 * block..8 * block + 8].fill(self.corrections[block]);
        }
    }

    /// Quantised value of (`token`, `column`) and its block's scale, for tests.
    #[cfg(test)]
    fn value(&self, token: usize, column: usize) -> (i8, f32, i32) {
        let target = slot(self.tokens, token, column / BLOCK_SIZE);
        (
            self.values[target * BLOCK_SIZE + column % BLOCK_SIZE],
            self.scales[target],
            self.corrections[target],
        )
    }
}

/// `out[t · out_stride + (r − rows.start)] = bias[r] + Σ_c W[r, c] · A[t, c]` for the rows in
/// `rows` (a range of multiples of [`ROW_TILE`]) and every token of `input`.
pub(crate) fn matmul(
    weights: &QuantizedMatrix,
    bias: &[f32],
    input: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
    out_stride: usize,
) {
    matmul_with(
        InstructionSet::detect(),
        weights,
        bias,
        input,
        rows,
        out,
        out_stride,
    )
}

pub(crate) fn matmul_with(
    instruction_set: InstructionSet,
    weights: &QuantizedMatrix,
    bias: &[f32],
    input: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
    out_stride: usize,
) {
    assert_eq!(
        weights.columns, input.columns,
        "matrix and activation widths differ"
    );
    assert!(
        rows.start.is_multiple_of(ROW_TILE)
            && rows.end.is_multiple_of(ROW_TILE)
            && rows.end <= weights.rows
    );
    assert!(bias.len() >= rows.end);
    assert!(input.tokens == 0 || out.len() >= (input.tokens - 1) * out_stride + rows.len());
    assert!(out_stride >= rows.len());
    match instruction_set {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the instruction set was detected on this CPU; the asserts above bound
        // every pointer the kernel forms.
        InstructionSet::Avx512Vnni => unsafe {
            x86::matmul_avx512_vnni(weights, bias, input, rows, out, out_stride)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        InstructionSet::Avx2 => unsafe {
            x86::matmul_avx2(weights, bias, input, rows, out, out_stride)
        },
        _ => matmul_portable(weights, bias, input, rows, out, out_stride),
    }
}

fn matmul_portable(
    weights: &QuantizedMatrix,
    bias: &[f32],
    input: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
    out_stride: usize,
) {
    let columns = weights.columns;
    let blocks = columns / BLOCK_SIZE;
    for token in 0..input.tokens {
        for row in rows.clone() {
            let packed = &weights.packed[row * columns / 2..(row + 1) * columns / 2];
            let weight_scales = &weights.scales[row * blocks..(row + 1) * blocks];
            let mut total = 0.0f32;
            for pair in 0..blocks / 2 {
                let bytes = &packed[pair * BLOCK_SIZE..(pair + 1) * BLOCK_SIZE];
                for half in 0..2 {
                    let block = 2 * pair + half;
                    let target = slot(input.tokens, token, block);
                    let values = &input.values[target * BLOCK_SIZE..(target + 1) * BLOCK_SIZE];
                    let mut dot = 8 * input.corrections[target];
                    for (byte, activation) in bytes.iter().zip(values) {
                        let nibble = if half == 0 { byte & 0x0f } else { byte >> 4 };
                        dot += nibble as i32 * *activation as i32;
                    }
                    total += weight_scales[block] * input.scales[target] * dot as f32;
                }
            }
            out[token * out_stride + row - rows.start] = bias[row] + total;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! x86-64 kernels; callers guarantee the CPU features and the buffer bounds.
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{QuantizedActivations, QuantizedMatrix, BLOCK_SIZE};

    /// Broadcasts two consecutive `f32` at `pointer` to lanes 0..8 and 8..16.
    #[inline(always)]
    unsafe fn pair_of_scales(pointer: *const f32, spread: __m512i) -> __m512 {
        let two = _mm_castsi128_ps(_mm_loadl_epi64(pointer as *const __m128i));
        _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(two))
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile_avx512<const ROWS: usize, const TOKENS: usize>(
        weights: &QuantizedMatrix,
        bias: &[f32],
        input: &QuantizedActivations,
        rows: &Range<usize>,
        first_token: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let columns = weights.columns;
        let blocks = columns / BLOCK_SIZE;
        let pairs = blocks / 2;
        let row_bytes = columns / 2;
        let spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        let low_nibbles = _mm256_set1_epi8(0x0f);
        let packed = weights.packed.as_ptr();
        let weight_scales = weights.scales.as_ptr();
        let values = input.values.as_ptr();
        let lane_scales = input.lane_scales.as_ptr();
        let lane_corrections = input.lane_corrections.as_ptr();
        let mut first_row = rows.start;
        while first_row < rows.end {
            let mut accumulators = [[_mm512_setzero_ps(); TOKENS]; ROWS];
            for pair in 0..pairs {
                let mut row_weights = [_mm512_setzero_si512(); ROWS];
                let mut row_scales = [_mm512_setzero_ps(); ROWS];
                for r in 0..ROWS {
                    let row = first_row + r;
                    let bytes = _mm256_loadu_si256(
                        packed.add(row * row_bytes + pair * BLOCK_SIZE) as *const __m256i
                    );
                    let low = _mm256_and_si256(bytes, low_nibbles);
                    let high = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low_nibbles);
                    row_weights[r] = _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
                    row_scales[r] =
                        pair_of_scales(weight_scales.add(row * blocks + 2 * pair), spread);
                }
                // Pair-major layout: this pair's tokens are consecutive 64-byte slots.
                let first_slot = pair * input.tokens + first_token;
                let pair_values = values.add(first_slot * 2 * BLOCK_SIZE);
                let pair_scales = lane_scales.add(first_slot * 16);
                let pair_corrections = lane_corrections.add(first_slot * 16);
                for t in 0..TOKENS {
                    let activations = _mm512_loadu_si512(pair_values.add(t * 64) as *const __m512i);
                    let token_scales = _mm512_loadu_ps(pair_scales.add(t * 16));
                    let correction =
                        _mm512_loadu_si512(pair_corrections.add(t * 16) as *const __m512i);
                    for r in 0..ROWS {
                        let dot = _mm512_dpbusd_epi32(correction, row_weights[r], activations);
                        let scale = _mm512_mul_ps(row_scales[r], token_scales);
                        accumulators[r][t] =
                            _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, accumulators[r][t]);
                    }
                }
            }
            for (r, row_accumulators) in accumulators.iter().enumerate() {
                let row = first_row + r;
                for (t, accumulator) in row_accumulators.iter().enumerate() {
                    *out.get_unchecked_mut((first_token + t) * out_stride + row - rows.start) =
                        *bias.get_unchecked(row) + _mm512_reduce_add_ps(*accumulator);
                }
            }
            first_row += ROWS;
        }
    }

    /// Quantises `input` into `output` (already sized for `output.tokens × output.columns`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) unsafe fn quantize_avx512(input: &[f32], output: &mut QuantizedActivations) {
        let blocks = output.tokens * output.columns / BLOCK_SIZE;
        debug_assert!(input.len() >= blocks * BLOCK_SIZE);
        let source = input.as_ptr();
        let values = output.values.as_mut_ptr();
        let lane_scales = output.lane_scales.as_mut_ptr();
        let lane_corrections = output.lane_corrections.as_mut_ptr();
        let tokens = output.tokens;
        let blocks_per_token = output.columns / BLOCK_SIZE;
        for token in 0..tokens {
            for block_index in 0..blocks_per_token {
                let block = token * blocks_per_token + block_index;
                let target = super::slot(tokens, token, block_index);
                let first = _mm512_loadu_ps(source.add(block * BLOCK_SIZE));
                let second = _mm512_loadu_ps(source.add(block * BLOCK_SIZE + 16));
                let maximum = _mm512_reduce_max_ps(_mm512_max_ps(
                    _mm512_abs_ps(first),
                    _mm512_abs_ps(second),
                ));
                let step = maximum / 127.0;
                let inverse = _mm512_set1_ps(if step > 0.0 { 1.0 / step } else { 0.0 });
                // Rounds to nearest even (the default MXCSR mode), as lrintf does.
                let low = _mm512_cvtps_epi32(_mm512_mul_ps(first, inverse));
                let high = _mm512_cvtps_epi32(_mm512_mul_ps(second, inverse));
                let destination = values.add(target * BLOCK_SIZE);
                _mm_storeu_si128(destination as *mut __m128i, _mm512_cvtsepi32_epi8(low));
                _mm_storeu_si128(
                    destination.add(16) as *mut __m128i,
                    _mm512_cvtsepi32_epi8(high),
                );
                let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(low, high));
                *output.scales.get_unchecked_mut(target) = step;
                *output.corrections.get_unchecked_mut(target) = -sum;
                _mm256_storeu_ps(lane_scales.add(8 * target), _mm256_set1_ps(step));
                _mm256_storeu_si256(
                    lane_corrections.add(8 * target) as *mut __m256i,
                    _mm256_set1_epi32(-sum),
                );
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub(super) unsafe fn matmul_avx512_vnni(
        weights: &QuantizedMatrix,
        bias: &[f32],
        input: &QuantizedActivations,
        rows: Range<usize>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        // Few tokens (a query): two rows by up to eight tokens, so each unpacked weight vector
        // serves every token. Many tokens: four rows by four tokens, which keeps a tile's
        // activations (values and lane vectors of 4 tokens) within L1 across the row tiles.
        let (rows, out) = (&rows, &mut *out);
        if input.tokens <= 8 {
            match input.tokens {
                8 => tile_avx512::<2, 8>(weights, bias, input, rows, 0, out, out_stride),
                7 => tile_avx512::<2, 7>(weights, bias, input, rows, 0, out, out_stride),
                6 => tile_avx512::<2, 6>(weights, bias, input, rows, 0, out, out_stride),
                5 => tile_avx512::<2, 5>(weights, bias, input, rows, 0, out, out_stride),
                4 => tile_avx512::<2, 4>(weights, bias, input, rows, 0, out, out_stride),
                3 => tile_avx512::<2, 3>(weights, bias, input, rows, 0, out, out_stride),
                2 => tile_avx512::<2, 2>(weights, bias, input, rows, 0, out, out_stride),
                1 => tile_avx512::<2, 1>(weights, bias, input, rows, 0, out, out_stride),
                _ => {}
            }
            return;
        }
        let mut token = 0;
        while token < input.tokens {
            let count = (input.tokens - token).min(4);
            match count {
                4 => tile_avx512::<4, 4>(weights, bias, input, rows, token, out, out_stride),
                3 => tile_avx512::<4, 3>(weights, bias, input, rows, token, out, out_stride),
                2 => tile_avx512::<4, 2>(weights, bias, input, rows, token, out, out_stride),
                _ => tile_avx512::<4, 1>(weights, bias, input, rows, token, out, out_stride),
            }
            token += count;
        }
    }

    #[inline(always)]
    unsafe fn horizontal_sum_256(value: __m256) -> f32 {
        let low = _mm256_castps256_ps128(value);
        let high = _mm256_extractf128_ps(value, 1);
        let sum = _mm_add_ps(low, high);
        let sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
        let sum = _mm_add_ss(sum, _mm_shuffle_ps(sum, sum, 1));
        _mm_cvtss_f32(sum)
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile_avx2<const TOKENS: usize>(
        weights: &QuantizedMatrix,
        bias: &[f32],
        input: &QuantizedActivations,
        rows: &Range<usize>,
        first_token: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        const ROWS: usize = 2;
        let columns = weights.columns;
        let blocks = columns / BLOCK_SIZE;
        let pairs = blocks / 2;
        let row_bytes = columns / 2;
        let low_nibbles = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let packed = weights.packed.as_ptr();
        let weight_scales = weights.scales.as_ptr();
        let values = input.values.as_ptr();
        let activation_scales = input.scales.as_ptr();
        let corrections = input.corrections.as_ptr();
        let mut first_row = rows.start;
        while first_row < rows.end {
            let mut accumulators = [[_mm256_setzero_ps(); TOKENS]; ROWS];
            for pair in 0..pairs {
                let mut row_weights = [[_mm256_setzero_si256(); 2]; ROWS];
                for (r, halves) in row_weights.iter_mut().enumerate() {
                    let bytes = _mm256_loadu_si256(
                        packed.add((first_row + r) * row_bytes + pair * BLOCK_SIZE)
                            as *const __m256i,
                    );
                    halves[0] = _mm256_and_si256(bytes, low_nibbles);
                    halves[1] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low_nibbles);
                }
                for t in 0..TOKENS {
                    let token = first_token + t;
                    for half in 0..2 {
                        let block = 2 * pair + half;
                        let activations = _mm256_loadu_si256(
                            values.add(super::slot(input.tokens, token, block) * BLOCK_SIZE)
                                as *const __m256i,
                        );
                        let token_scale =
                            *activation_scales.add(super::slot(input.tokens, token, block));
                        let correction = _mm256_set1_epi32(*corrections.add(super::slot(
                            input.tokens,
                            token,
                            block,
                        )));
                        for r in 0..ROWS {
                            let products = _mm256_maddubs_epi16(row_weights[r][half], activations);
                            let dot =
                                _mm256_add_epi32(_mm256_madd_epi16(products, ones), correction);
                            let scale = _mm256_set1_ps(
                                *weight_scales.add((first_row + r) * blocks + block) * token_scale,
                            );
                            accumulators[r][t] =
                                _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, accumulators[r][t]);
                        }
                    }
                }
            }
            for (r, row_accumulators) in accumulators.iter().enumerate() {
                let row = first_row + r;
                for (t, accumulator) in row_accumulators.iter().enumerate() {
                    *out.get_unchecked_mut((first_token + t) * out_stride + row - rows.start) =
                        *bias.get_unchecked(row) + horizontal_sum_256(*accumulator);
                }
            }
            first_row += ROWS;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul_avx2(
        weights: &QuantizedMatrix,
        bias: &[f32],
        input: &QuantizedActivations,
        rows: Range<usize>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let mut token = 0;
        while token < input.tokens {
            let count = (input.tokens - token).min(2);
            if count == 2 {
                tile_avx2::<2>(weights, bias, input, &rows, token, out, out_stride);
            } else {
                tile_avx2::<1>(weights, bias, input, &rows, token, out, out_stride);
            }
            token += count;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random generator for test data.
    pub(crate) struct Lcg(pub u64);
    impl Lcg {
        pub fn next_u32(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        pub fn uniform(&mut self) -> f32 {
            self.next_u32() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
        }
    }

    /// Random Q4_0 bytes for a `rows × columns` matrix.
    pub(crate) fn random_q4(random: &mut Lcg, rows: usize, columns: usize) -> Vec<u8> {
        let mut raw = Vec::new();
        for _ in 0..rows * columns / BLOCK_SIZE {
            // Scales between 2^-8 and 2^-5 as fp16 bit patterns (exponent 7..10).
            let exponent = 7 + (random.next_u32() % 3) as u16;
            let scale_bits = (exponent << 10) | (random.next_u32() % 1024) as u16;
            raw.extend_from_slice(&scale_bits.to_le_bytes());
            for _ in 0..16 {
                raw.push((random.next_u32() & 0xff) as u8);
            }
        }
        raw
    }

    #[test]
    fn repacking_preserves_every_weight() {
        let mut random = Lcg(7);
        let (rows, columns) = (4, 128);
        let raw = random_q4(&mut random, rows, columns);
        let matrix = QuantizedMatrix::from_q4_blocks(&raw, rows, columns);
        let mut row = vec![0.0; columns];
        for r in 0..rows {
            let bytes = columns / BLOCK_SIZE * BLOCK_BYTES;
            dequantize_q4_row(&raw[r * bytes..(r + 1) * bytes], &mut row);
            for (c, expected) in row.iter().enumerate() {
                assert_eq!(matrix.weight(r, c), *expected, "row {r} column {c}");
            }
        }
    }

    #[test]
    fn quantized_activations_round_to_nearest_even_per_block() {
        let mut input = vec![0.0f32; 64];
        input[0] = 2.54; // block maximum: step 0.02
        input[1] = 0.01; // exactly half a step: rounds to even (0)
        input[2] = 0.03; // 1.5 steps: rounds to even (2)
        input[3] = -1.0;
        let mut activations = QuantizedActivations::default();
        activations.quantize(&input, 1, 64);
        assert_eq!(activations.value(0, 0).0, 127);
        assert_eq!(activations.value(0, 1).0, 0);
        assert_eq!(activations.value(0, 2).0, 2);
        assert_eq!(activations.value(0, 3).0, -50);
        assert!((activations.value(0, 0).1 - 0.02).abs() < 1e-7);
        assert_eq!(activations.value(0, 40).1, 0.0);
        assert_eq!(activations.value(0, 0).2, -(127 + 2 - 50));
        assert_eq!(activations.value(0, 40).2, 0);
    }

    fn check_kernel(instruction_set: InstructionSet) {
        let mut random = Lcg(11);
        for (rows, columns, tokens) in [
            (8, 64, 1),
            (12, 128, 5),
            (16, 384, 19),
            (4, 192, 8),
            (8, 128, 9),
        ] {
            let raw = random_q4(&mut random, rows, columns);
            let matrix = QuantizedMatrix::from_q4_blocks(&raw, rows, columns);
            let bias: Vec<f32> = (0..rows).map(|_| random.uniform()).collect();
            let input: Vec<f32> = (0..tokens * columns)
                .map(|_| random.uniform() * 3.0)
                .collect();
            let mut activations = QuantizedActivations::default();
            activations.quantize(&input, tokens, columns);
            let mut expected = vec![0.0; tokens * rows];
            matmul_portable(&matrix, &bias, &activations, 0..rows, &mut expected, rows);
            // Against float arithmetic on the dequantised values.
            for t in 0..tokens {
                for r in 0..rows {
                    let mut total = bias[r] as f64;
                    for c in 0..columns {
                        let (value, scale, _) = activations.value(t, c);
                        let activation = value as f64 * scale as f64;
                        total += matrix.weight(r, c) as f64 * activation;
                    }
                    let got = expected[t * rows + r] as f64;
                    assert!(
                        (got - total).abs() < 1e-4 * (1.0 + total.abs()),
                        "{got} vs {total}"
                    );
                }
            }
            // The selected kernel over all rows, and over the upper half of the rows.
            let mut got = vec![0.0; tokens * rows];
            matmul_with(
                instruction_set,
                &matrix,
                &bias,
                &activations,
                0..rows,
                &mut got,
                rows,
            );
            for (a, b) in got.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
            let half = rows / 2 / ROW_TILE * ROW_TILE;
            if half > 0 {
                let mut part = vec![0.0; tokens * (rows - half)];
                matmul_with(
                    instruction_set,
                    &matrix,
                    &bias,
                    &activations,
                    half..rows,
                    &mut part,
                    rows - half,
                );
                for t in 0..tokens {
                    for r in half..rows {
                        let (a, b) = (part[t * (rows - half) + r - half], expected[t * rows + r]);
                        assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()));
                    }
                }
            }
        }
    }

    #[test]
    fn every_supported_kernel_matches_the_portable_definition() {
        check_kernel(InstructionSet::Portable);
        let best = InstructionSet::best_supported();
        if best == InstructionSet::Avx512Vnni {
            check_kernel(InstructionSet::Avx512Vnni);
            check_kernel(InstructionSet::Avx2);
        } else if best == InstructionSet::Avx2 {
            check_kernel(InstructionSet::Avx2);
        } else {
            println!("skipped: no SIMD kernel on this CPU, portable kernel checked only");
        }
    }
}

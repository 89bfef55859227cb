//! Exact cosine search over many vectors: each vector is scaled to unit length and stored as
//! signed 8-bit codes with one scale (`value ≈ code × scale`), rows back to back in one `Vec<i8>`.
//! A query is quantised the same way; a score is the integer dot product times both scales.
//! Scoring runs AVX-512 or AVX2 code when the CPU has it, and is split over threads for large
//! stores. 384-dimensional vectors take 388 bytes a row (85,000 products: 33 MB).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rayon::prelude::*;

/// Largest code magnitude; -128 is never used, so negation is exact.
const CODE_LIMIT: f32 = 127.0;

/// Rows scored per parallel task.
const ROWS_PER_TASK: usize = 4096;

/// A store with at least this many rows is scored on several threads.
const PARALLEL_ROWS: usize = 16_384;

/// A vector scaled to unit length and quantised to 8-bit codes.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedVector {
    pub scale: f32,
    pub codes: Vec<i8>,
}

impl QuantizedVector {
    /// Scales `values` to unit length and quantises them. A zero or non-finite vector gives
    /// `None` (it has no direction).
    pub fn from_values(values: &[f32]) -> Option<Self> {
        if values.iter().any(|value| !value.is_finite()) {
            return None;
        }
        let norm = values
            .iter()
            .map(|value| f64::from(*value) * f64::from(*value))
            .sum::<f64>()
            .sqrt();
        if norm <= f64::MIN_POSITIVE {
            return None;
        }
        let largest = values
            .iter()
            .fold(0.0f64, |largest, value| largest.max(f64::from(value.abs())))
            / norm;
        let scale = (largest / f64::from(CODE_LIMIT)) as f32;
        let inverse = 1.0 / (f64::from(scale) * norm);
        let codes = values
            .iter()
            .map(|value| {
                (f64::from(*value) * inverse)
                    .round()
                    .clamp(-f64::from(CODE_LIMIT), f64::from(CODE_LIMIT)) as i8
            })
            .collect();
        Some(Self { scale, codes })
    }

    /// Approximate cosine similarity with another quantised vector of the same dimension.
    pub fn cosine(&self, other: &QuantizedVector) -> f32 {
        dot(&self.codes, &other.codes) as f32 * self.scale * other.scale
    }

    /// The unit vector these codes stand for.
    pub fn to_values(&self) -> Vec<f32> {
        self.codes
            .iter()
            .map(|code| f32::from(*code) * self.scale)
            .collect()
    }
}

/// Integer dot product of two equally long code slices.
pub fn dot(left: &[i8], right: &[i8]) -> i32 {
    left.iter()
        .zip(right)
        .map(|(a, b)| i32::from(i16::from(*a) * i16::from(*b)))
        .sum()
}

/// One row of the store plus whatever the caller filters on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredRow {
    pub product_id: i64,
    pub score: f32,
}

/// Vectors of one kind (text or image) for many products, with a per-row tag used as a filter
/// (the category index, or `u16::MAX` when unknown).
#[derive(Debug, Clone)]
pub struct VectorStore {
    dimension: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
    product_ids: Vec<i64>,
    tags: Vec<u16>,
    rows: HashMap<i64, usize>,
}

/// Tag of a row whose product has no category.
pub const NO_TAG: u16 = u16::MAX;

impl VectorStore {
    pub fn new(dimension: usize) -> Self {
        Self {
            dimension,
            codes: Vec::new(),
            scales: Vec::new(),
            product_ids: Vec::new(),
            tags: Vec::new(),
            rows: HashMap::new(),
        }
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn len(&self) -> usize {
        self.product_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.product_ids.is_empty()
    }

    pub fn contains(&self, product_id: i64) -> bool {
        self.rows.contains_key(&product_id)
    }

    /// Bytes held by the rows (codes, scales, ids, tags and the id map).
    pub fn memory_bytes(&self) -> usize {
        self.codes.capacity()
            + self.scales.capacity() * 4
            + self.product_ids.capacity() * 8
            + self.tags.capacity() * 2
            + self.rows.capacity() * (8 + 8 + 8)
    }

    /// Inserts or replaces the vector of a product. The caller checked the dimension.
    pub fn upsert(&mut self, product_id: i64, vector: &QuantizedVector, tag: u16) {
        debug_assert_eq!(vector.codes.len(), self.dimension);
        if let Some(&row) = self.rows.get(&product_id) {
            let start = row * self.dimension;
            self.codes[start..start + self.dimension].copy_from_slice(&vector.codes);
            self.scales[row] = vector.scale;
            self.tags[row] = tag;
            return;
        }
        self.rows.insert(product_id, self.product_ids.len());
        self.codes.extend_from_slice(&vector.codes);
        self.scales.push(vector.scale);
        self.product_ids.push(product_id);
        self.tags.push(tag);
    }

    /// Changes the filter tag of a product's row, if it has one.
    pub fn set_tag(&mut self, product_id: i64, tag: u16) {
        if let Some(&row) = self.rows.get(&product_id) {
            self.tags[row] = tag;
        }
    }

    /// Removes a product's vector (the last row moves into its place). Returns whether it had one.
    pub fn remove(&mut self, product_id: i64) -> bool {
        let Some(row) = self.rows.remove(&product_id) else {
            return false;
        };
        let last = self.product_ids.len() - 1;
        if row != last {
            let (head, tail) = self.codes.split_at_mut(last * self.dimension);
            head[row * self.dimension..(row + 1) * self.dimension]
                .copy_from_slice(&tail[..self.dimension]);
            self.scales[row] = self.scales[last];
            self.product_ids[row] = self.product_ids[last];
            self.tags[row] = self.tags[last];
            self.rows.insert(self.product_ids[row], row);
        }
        self.codes.truncate(last * self.dimension);
        self.scales.truncate(last);
        self.product_ids.truncate(last);
        self.tags.truncate(last);
        true
    }

    /// The stored vector of a product.
    pub fn get(&self, product_id: i64) -> Option<QuantizedVector> {
        let row = *self.rows.get(&product_id)?;
        Some(QuantizedVector {
            scale: self.scales[row],
            codes: self.codes[row * self.dimension..(row + 1) * self.dimension].to_vec(),
        })
    }

    /// Cosine similarity of `query` with one product's vector.
    pub fn cosine_with(&self, product_id: i64, query: &QuantizedVector) -> Option<f32> {
        let row = *self.rows.get(&product_id)?;
        let codes = &self.codes[row * self.dimension..(row + 1) * self.dimension];
        Some(dot(codes, &query.codes) as f32 * self.scales[row] * query.scale)
    }

    /// Cosine similarity of `query` with every row (`f32::NEG_INFINITY` for rows whose tag is
    /// not `tag_filter`, when one is given), in row order.
    pub fn score_all(&self, query: &QuantizedVector, tag_filter: Option<u16>) -> Vec<f32> {
        let mut scores = vec![0.0f32; self.len()];
        if self.is_empty() || query.codes.len() != self.dimension {
            return scores;
        }
        let dimension = self.dimension;
        let score_block = |first_row: usize, output: &mut [f32]| {
            let rows = output.len();
            score_rows(
                &self.codes[first_row * dimension..(first_row + rows) * dimension],
                dimension,
                &self.scales[first_row..first_row + rows],
                &query.codes,
                query.scale,
                output,
            );
            if let Some(tag) = tag_filter {
                for (offset, score) in output.iter_mut().enumerate() {
                    if self.tags[first_row + offset] != tag {
                        *score = f32::NEG_INFINITY;
                    }
                }
            }
        };
        if self.len() >= PARALLEL_ROWS && rayon::current_num_threads() > 1 {
            scores
                .par_chunks_mut(ROWS_PER_TASK)
                .enumerate()
                .for_each(|(task, output)| score_block(task * ROWS_PER_TASK, output));
        } else {
            score_block(0, &mut scores);
        }
        scores
    }

    /// The `limit` best rows by cosine similarity with `query` (ties broken by product id), at
    /// least `minimum` (use `f32::NEG_INFINITY` for none), skipping `exclude`, optionally only
    /// rows tagged `tag_filter`. Also returns how many rows reached `minimum`.
    pub fn nearest(
        &self,
        query: &QuantizedVector,
        limit: usize,
        minimum: f32,
        tag_filter: Option<u16>,
        exclude: Option<i64>,
    ) -> (Vec<ScoredRow>, usize) {
        let scores = self.score_all(query, tag_filter);
        self.best_of(&scores, limit, minimum, exclude)
    }

    /// The `limit` best rows of precomputed [`Self::score_all`] scores, at least `minimum`,
    /// skipping `exclude`; and how many rows reached `minimum`.
    pub fn best_of(
        &self,
        scores: &[f32],
        limit: usize,
        minimum: f32,
        exclude: Option<i64>,
    ) -> (Vec<ScoredRow>, usize) {
        let mut candidates: Vec<(f32, usize)> = scores
            .iter()
            .enumerate()
            .filter(|(row, score)| {
                **score >= minimum && score.is_finite() && exclude != Some(self.product_ids[*row])
            })
            .map(|(row, score)| (*score, row))
            .collect();
        let matching = candidates.len();
        if limit == 0 {
            return (Vec::new(), matching);
        }
        let order = |left: &(f32, usize), right: &(f32, usize)| {
            right
                .0
                .total_cmp(&left.0)
                .then_with(|| self.product_ids[left.1].cmp(&self.product_ids[right.1]))
        };
        if candidates.len() > limit {
            candidates.select_nth_unstable_by(limit - 1, order);
            candidates.truncate(limit);
        }
        candidates.sort_unstable_by(order);
        let rows = candidates
            .into_iter()
            .map(|(score, row)| ScoredRow {
                product_id: self.product_ids[row],
                score,
            })
            .collect();
        (rows, matching)
    }

    /// Row index of a product (valid until the next change).
    pub fn row_of(&self, product_id: i64) -> Option<usize> {
        self.rows.get(&product_id).copied()
    }
}

type ScoreRowsFunction = fn(&[i8], usize, &[f32], &[i8], f32, &mut [f32]);

/// Whether [`set_portable_kernels`] asked for the portable kernel.
static PORTABLE_ONLY: AtomicBool = AtomicBool::new(false);

/// Makes every vector search of this process use the portable scoring kernel (`true`) or the
/// widest one the CPU offers (`false`, the default), for comparing code paths; the binary or a
/// test calls it before searching.
pub fn set_portable_kernels(portable: bool) {
    PORTABLE_ONLY.store(portable, Ordering::Relaxed);
}

/// `output[r] = dot(rows[r], query) × scales[r] × query_scale` for each row, with the kernel
/// [`kernel`] chooses.
fn score_rows(
    rows: &[i8],
    dimension: usize,
    scales: &[f32],
    query: &[i8],
    query_scale: f32,
    output: &mut [f32],
) {
    let (_, function) = kernel();
    function(rows, dimension, scales, query, query_scale, output);
}

/// The scoring kernel in use and its name: the widest the CPU offers (detected once), unless
/// [`set_portable_kernels`] asked for the portable one.
fn kernel() -> (&'static str, ScoreRowsFunction) {
    static DETECTED: OnceLock<(&'static str, ScoreRowsFunction)> = OnceLock::new();
    if PORTABLE_ONLY.load(Ordering::Relaxed) {
        return ("portable", score_rows_portable);
    }
    *DETECTED.get_or_init(widest_kernel)
}

fn widest_kernel() -> (&'static str, ScoreRowsFunction) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni") {
            return ("avx512-vnni", x86::score_rows_avx512);
        }
        if is_x86_feature_detected!("avx2") {
            return ("avx2", x86::score_rows_avx2);
        }
    }
    ("portable", score_rows_portable)
}

/// The name of the scoring kernel in use (for benchmarks and logs).
pub fn kernel_name() -> &'static str {
    kernel().0
}

fn score_rows_portable(
    rows: &[i8],
    dimension: usize,
    scales: &[f32],
    query: &[i8],
    query_scale: f32,
    output: &mut [f32],
) {
    score_rows_generic(rows, dimension, scales, query, query_scale, output);
}

/// Written so the compiler turns the inner loop into widening multiply-adds
/// (`pmaddwd` / `vpdpwssd`) on whatever instruction set the caller enables.
#[inline(always)]
fn score_rows_generic(
    rows: &[i8],
    dimension: usize,
    scales: &[f32],
    query: &[i8],
    query_scale: f32,
    output: &mut [f32],
) {
    if dimension == 0 {
        output.iter_mut().for_each(|value| *value = 0.0);
        return;
    }
    for ((row, scale), out) in rows.chunks_exact(dimension).zip(scales).zip(output) {
        let mut sum = 0i32;
        for (left, right) in row.chunks(64).zip(query.chunks(64)) {
            let mut partial = 0i32;
            for (a, b) in left.iter().zip(right) {
                partial += i32::from(i16::from(*a) * i16::from(*b));
            }
            sum += partial;
        }
        *out = sum as f32 * scale * query_scale;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    pub fn score_rows_avx2(
        rows: &[i8],
        dimension: usize,
        scales: &[f32],
        query: &[i8],
        query_scale: f32,
        output: &mut [f32],
    ) {
        // SAFETY: chosen only after `is_x86_feature_detected!("avx2")` returned true.
        unsafe { avx2(rows, dimension, scales, query, query_scale, output) }
    }

    pub fn score_rows_avx512(
        rows: &[i8],
        dimension: usize,
        scales: &[f32],
        query: &[i8],
        query_scale: f32,
        output: &mut [f32],
    ) {
        // SAFETY: chosen only after `is_x86_feature_detected!` confirmed AVX-512 BW and VNNI.
        unsafe { avx512(rows, dimension, scales, query, query_scale, output) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn avx2(
        rows: &[i8],
        dimension: usize,
        scales: &[f32],
        query: &[i8],
        query_scale: f32,
        output: &mut [f32],
    ) {
        super::score_rows_generic(rows, dimension, scales, query, query_scale, output);
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    unsafe fn avx512(
        rows: &[i8],
        dimension: usize,
        scales: &[f32],
        query: &[i8],
        query_scale: f32,
        output: &mut [f32],
    ) {
        super::score_rows_generic(rows, dimension, scales, query, query_scale, output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random_vector(seed: u64, dimension: usize) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..dimension)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    fn exact_cosine(left: &[f32], right: &[f32]) -> f32 {
        let dot: f64 = left
            .iter()
            .zip(right)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let left_norm: f64 = left
            .iter()
            .map(|a| f64::from(*a).powi(2))
            .sum::<f64>()
            .sqrt();
        let right_norm: f64 = right
            .iter()
            .map(|b| f64::from(*b).powi(2))
            .sum::<f64>()
            .sqrt();
        (dot / (left_norm * right_norm)) as f32
    }

    #[test]
    fn quantised_cosine_is_close_to_exact() {
        for seed in 0..50 {
            let left = pseudo_random_vector(seed, 384);
            let right: Vec<f32> = pseudo_random_vector(seed + 1000, 384)
                .iter()
                .zip(&left)
                .map(|(noise, base)| base + 0.5 * noise)
                .collect();
            let exact = exact_cosine(&left, &right);
            let approximate = QuantizedVector::from_values(&left)
                .unwrap()
                .cosine(&QuantizedVector::from_values(&right).unwrap());
            assert!(
                (exact - approximate).abs() < 0.01,
                "{exact} vs {approximate}"
            );
        }
    }

    #[test]
    fn zero_and_non_finite_vectors_have_no_direction() {
        assert!(QuantizedVector::from_values(&[0.0; 8]).is_none());
        assert!(QuantizedVector::from_values(&[1.0, f32::NAN]).is_none());
        assert!(QuantizedVector::from_values(&[]).is_none());
    }

    #[test]
    fn kernels_agree_with_the_portable_loop() {
        for dimension in [1usize, 7, 64, 65, 384, 1280] {
            let rows: Vec<i8> = (0..dimension * 9)
                .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
                .collect();
            let query: Vec<i8> = (0..dimension)
                .map(|i| ((i * 11 % 255) as i32 - 127) as i8)
                .collect();
            let scales = vec![1.0f32; 9];
            let mut fast = vec![0.0f32; 9];
            let mut portable = vec![0.0f32; 9];
            score_rows(&rows, dimension, &scales, &query, 1.0, &mut fast);
            score_rows_portable(&rows, dimension, &scales, &query, 1.0, &mut portable);
            let naive: Vec<f32> = rows
                .chunks_exact(dimension)
                .map(|row| {
                    row.iter()
                        .zip(&query)
                        .map(|(a, b)| i32::from(*a) * i32::from(*b))
                        .sum::<i32>() as f32
                })
                .collect();
            assert_eq!(fast, naive, "dimension {dimension}");
            assert_eq!(portable, naive, "dimension {dimension}");
        }
    }

    #[test]
    fn nearest_finds_the_exact_top_rows_in_parallel_and_with_filters() {
        let dimension = 48;
        let mut store = VectorStore::new(dimension);
        let vectors: Vec<Vec<f32>> = (0..20_000)
            .map(|i| pseudo_random_vector(i, dimension))
            .collect();
        for (index, vector) in vectors.iter().enumerate() {
            store.upsert(
                index as i64,
                &QuantizedVector::from_values(vector).unwrap(),
                (index % 3) as u16,
            );
        }
        let query_values = pseudo_random_vector(777_777, dimension);
        let query = QuantizedVector::from_values(&query_values).unwrap();
        let (top, matching) = store.nearest(&query, 10, f32::NEG_INFINITY, None, None);
        assert_eq!(matching, 20_000);
        assert_eq!(top.len(), 10);
        let mut exact: Vec<(f32, i64)> = vectors
            .iter()
            .enumerate()
            .map(|(index, vector)| (exact_cosine(vector, &query_values), index as i64))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let exact_top: Vec<i64> = exact.iter().take(10).map(|(_, id)| *id).collect();
        let found: Vec<i64> = top.iter().map(|row| row.product_id).collect();
        let overlap = found.iter().filter(|id| exact_top.contains(id)).count();
        assert!(
            overlap >= 8,
            "quantised top 10 {found:?} vs exact {exact_top:?}"
        );
        for pair in top.windows(2) {
            assert!(pair[0].score >= pair[1].score);
        }
        let (filtered, _) = store.nearest(
            &query,
            5,
            f32::NEG_INFINITY,
            Some(2),
            Some(top[0].product_id),
        );
        assert!(filtered
            .iter()
            .all(|row| row.product_id % 3 == 2 && row.product_id != top[0].product_id));
        let (above, count) = store.nearest(&query, 100_000, 0.2, None, None);
        assert_eq!(above.len(), count);
        assert!(above.iter().all(|row| row.score >= 0.2));
    }

    #[test]
    fn removal_moves_the_last_row_and_keeps_lookups_right() {
        let mut store = VectorStore::new(4);
        for id in 0..5i64 {
            let mut values = vec![0.0f32; 4];
            values[(id % 4) as usize] = 1.0;
            values[((id + 1) % 4) as usize] = id as f32 * 0.1;
            store.upsert(id, &QuantizedVector::from_values(&values).unwrap(), 0);
        }
        let last = store.get(4).unwrap();
        assert!(store.remove(1));
        assert!(!store.remove(1));
        assert_eq!(store.len(), 4);
        assert_eq!(store.get(4).unwrap(), last);
        assert!(store.get(1).is_none());
        assert!((store.cosine_with(4, &last).unwrap() - 1.0).abs() < 0.02);
        store.upsert(
            4,
            &QuantizedVector::from_values(&[0.0, 0.0, 0.0, 1.0]).unwrap(),
            1,
        );
        assert_eq!(store.len(), 4);
        assert!(
            (store
                .cosine_with(
                    4,
                    &QuantizedVector::from_values(&[0.0, 0.0, 0.0, 2.0]).unwrap()
                )
                .unwrap()
                - 1.0)
                .abs()
                < 0.02
        );
    }
}

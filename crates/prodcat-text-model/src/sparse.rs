//! Compressed sparse rows with `u32` column indices and `f32` values: the feature matrix from
//! the vectoriser to the SVM, half the bytes per stored value of scikit-learn's
//! (`int32` + `float64`).

use crate::TextModelError;

/// One sparse row: strictly increasing column indices and their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseRow {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseRow {
    /// Number of stored entries.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True when the row has no stored entry (an all-zero row).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// A CSR matrix: row `i` holds `indices[offsets[i]..offsets[i + 1]]` (strictly increasing)
/// and the matching `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    column_count: usize,
    offsets: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl CsrMatrix {
    /// An empty matrix with `column_count` columns and no rows.
    pub fn empty(column_count: usize) -> Self {
        Self {
            column_count,
            offsets: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Builds a matrix from rows, checking that indices are strictly increasing, inside
    /// `0..column_count`, and that every value is finite.
    pub fn from_rows(column_count: usize, rows: &[SparseRow]) -> Result<Self, TextModelError> {
        let mut matrix = Self::empty(column_count);
        matrix.reserve(rows.iter().map(SparseRow::len).sum());
        for (row_number, row) in rows.iter().enumerate() {
            matrix
                .push_row(&row.indices, &row.values)
                .map_err(|reason| TextModelError::InvalidOption {
                    name: "rows",
                    reason: format!("row {row_number}: {reason}"),
                })?;
        }
        Ok(matrix)
    }

    pub(crate) fn reserve(&mut self, entries: usize) {
        self.indices.reserve(entries);
        self.values.reserve(entries);
    }

    /// Appends a row after validating it.
    pub(crate) fn push_row(&mut self, indices: &[u32], values: &[f32]) -> Result<(), String> {
        if indices.len() != values.len() {
            return Err(format!(
                "{} indices but {} values",
                indices.len(),
                values.len()
            ));
        }
        if let Some(pair) = indices.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err(format!(
                "column indices not strictly increasing ({} then {})",
                pair[0], pair[1]
            ));
        }
        if let Some(&last) = indices.last() {
            if last as usize >= self.column_count {
                return Err(format!("column {last} outside 0..{}", self.column_count));
            }
        }
        if let Some(value) = values.iter().find(|value| !value.is_finite()) {
            return Err(format!("non-finite value {value}"));
        }
        self.indices.extend_from_slice(indices);
        self.values.extend_from_slice(values);
        self.offsets.push(self.indices.len());
        Ok(())
    }

    /// Number of rows.
    pub fn row_count(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of columns.
    pub fn column_count(&self) -> usize {
        self.column_count
    }

    /// Number of stored entries.
    pub fn stored_count(&self) -> usize {
        self.indices.len()
    }

    /// Column indices and values of row `row` (empty slices when out of range).
    pub fn row(&self, row: usize) -> (&[u32], &[f32]) {
        if row + 1 >= self.offsets.len() {
            return (&[], &[]);
        }
        let (start, end) = (self.offsets[row], self.offsets[row + 1]);
        (&self.indices[start..end], &self.values[start..end])
    }

    /// A new matrix made of the given rows, in the given order (out-of-range rows are skipped).
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        let mut selected = Self::empty(self.column_count);
        for &row in rows.iter().filter(|&&row| row < self.row_count()) {
            let (indices, values) = self.row(row);
            selected.indices.extend_from_slice(indices);
            selected.values.extend_from_slice(values);
            selected.offsets.push(selected.indices.len());
        }
        selected
    }

    /// Appends one row produced by the vectoriser, which guarantees the invariants.
    pub(crate) fn append_trusted(&mut self, indices: &[u32], values: &[f32]) {
        self.indices.extend_from_slice(indices);
        self.values.extend_from_slice(values);
        self.offsets.push(self.indices.len());
    }

    /// The largest stored column index, if any entry is stored.
    pub fn max_column(&self) -> Option<u32> {
        self.indices.iter().copied().max()
    }

    /// Appends one row made of two vectoriser rows side by side (the second's columns already
    /// shifted past the first's).
    pub(crate) fn append_union(&mut self, first: &SparseRow, second: &SparseRow) {
        self.indices.extend_from_slice(&first.indices);
        self.indices.extend_from_slice(&second.indices);
        self.values.extend_from_slice(&first.values);
        self.values.extend_from_slice(&second.values);
        self.offsets.push(self.indices.len());
    }

    /// This matrix with `width` more columns holding `dense[row]` multiplied by `scale` (zeros
    /// are not stored). Every dense row must have `width` finite values.
    pub(crate) fn with_dense_columns(
        &self,
        dense: &[&[f32]],
        width: usize,
        scale: f32,
    ) -> Result<Self, String> {
        if dense.len() != self.row_count() {
            return Err(format!(
                "{} rows of dense values for {} texts",
                dense.len(),
                self.row_count()
            ));
        }
        let mut out = Self::empty(self.column_count + width);
        out.reserve(self.stored_count() + dense.len() * width);
        for (row, values) in dense.iter().enumerate() {
            check_dense(values, width).map_err(|reason| format!("row {row}: {reason}"))?;
            let (indices, stored) = self.row(row);
            out.indices.extend_from_slice(indices);
            out.values.extend_from_slice(stored);
            append_dense(
                &mut out.indices,
                &mut out.values,
                self.column_count,
                values,
                scale,
            );
            out.offsets.push(out.indices.len());
        }
        Ok(out)
    }

    /// Bytes held by the three arrays.
    pub fn heap_bytes(&self) -> usize {
        self.offsets.len() * std::mem::size_of::<usize>()
            + self.indices.len() * 4
            + self.values.len() * 4
    }
}

/// Checks that a dense row has `width` values, all finite.
pub(crate) fn check_dense(values: &[f32], width: usize) -> Result<(), String> {
    if values.len() != width {
        return Err(format!("{} values, expected {width}", values.len()));
    }
    if let Some(value) = values.iter().find(|value| !value.is_finite()) {
        return Err(format!("non-finite value {value}"));
    }
    Ok(())
}

/// Appends `values * scale` as the columns from `first_column` on, skipping zeros.
pub(crate) fn append_dense(
    indices: &mut Vec<u32>,
    stored: &mut Vec<f32>,
    first_column: usize,
    values: &[f32],
    scale: f32,
) {
    for (offset, &value) in values.iter().enumerate() {
        if value != 0.0 {
            indices.push((first_column + offset) as u32);
            stored.push(value * scale);
        }
    }
}

//! Feature extractors for product profiles, and the standard product profile layout that
//! puts them together (text size, emptiness, language, vocabulary coverage, image statistics,
//! embedding components, predicted class and confidence, and the text itself).

pub mod image;
pub mod language;
pub mod pca;
pub mod text;

use crate::drift::DriftOptions;
use crate::profile::{ColumnKind, ColumnSpec, Value};
use crate::stattest::StatTestKind;

pub use image::ImageStats;
pub use language::{detect_language, Language};
pub use pca::Pca;
pub use text::{out_of_vocabulary_share, text_features, word_ngrams, TextFeatures};

/// Name of the predicted-class column, tested with PSI by [`product_drift_options`].
pub const PREDICTED_CLASS_COLUMN: &str = "predicted_class";

/// Everything observed about one product at prediction time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProductObservation {
    /// Normalised product text (title and description).
    pub text: String,
    /// Whether the description was empty.
    pub description_empty: bool,
    /// Share of out-of-vocabulary n-grams, when a vocabulary was available.
    pub out_of_vocabulary_share: Option<f64>,
    /// Image statistics, when the image could be read.
    pub image: Option<ImageStats>,
    /// Embedding coordinates along the profile's principal components.
    pub embedding_components: Vec<f64>,
    pub predicted_class: Option<String>,
    pub confidence: Option<f64>,
}

/// Columns of the standard product profile with `components` principal components.
pub fn product_schema(components: usize) -> Vec<ColumnSpec> {
    let mut schema = vec![
        ColumnSpec::new("text_length", ColumnKind::Numeric),
        ColumnSpec::new("word_count", ColumnKind::Numeric),
        ColumnSpec::new("empty_description", ColumnKind::Binary),
        ColumnSpec::new("language", ColumnKind::Categorical),
        ColumnSpec::new("out_of_vocabulary_share", ColumnKind::Numeric),
        ColumnSpec::new("image_width", ColumnKind::Numeric),
        ColumnSpec::new("image_height", ColumnKind::Numeric),
        ColumnSpec::new("image_brightness", ColumnKind::Numeric),
        ColumnSpec::new("image_border_ratio", ColumnKind::Numeric),
    ];
    for index in 1..=components {
        schema.push(ColumnSpec::new(
            format!("embedding_pc{index}"),
            ColumnKind::Numeric,
        ));
    }
    schema.push(ColumnSpec::new(
        PREDICTED_CLASS_COLUMN,
        ColumnKind::Categorical,
    ));
    schema.push(ColumnSpec::new("confidence", ColumnKind::Numeric));
    schema.push(ColumnSpec::new("text", ColumnKind::Text));
    schema
}

/// The row of [`product_schema`]`(components)` for one observation.
pub fn product_row(observation: &ProductObservation, components: usize) -> Vec<Value> {
    let size = text_features(&observation.text);
    let number = |value: Option<f64>| value.map(Value::Number).unwrap_or(Value::Missing);
    let image = observation.image;
    let mut row = vec![
        Value::Number(size.characters as f64),
        Value::Number(size.words as f64),
        Value::Flag(observation.description_empty),
        Value::Category(detect_language(&observation.text).code().to_owned()),
        number(observation.out_of_vocabulary_share),
        number(image.map(|i| i.width as f64)),
        number(image.map(|i| i.height as f64)),
        number(image.map(|i| i.mean_brightness)),
        number(image.map(|i| i.white_border_ratio)),
    ];
    for index in 0..components {
        row.push(number(observation.embedding_components.get(index).copied()));
    }
    row.push(
        observation
            .predicted_class
            .clone()
            .map(Value::Category)
            .unwrap_or(Value::Missing),
    );
    row.push(number(observation.confidence));
    row.push(if size.is_empty {
        Value::Missing
    } else {
        Value::Text(observation.text.clone())
    });
    row
}

/// Default options for product profiles: Evidently's defaults, PSI on the predicted class.
pub fn product_drift_options() -> DriftOptions {
    DriftOptions::default().with_test(
        PREDICTED_CLASS_COLUMN,
        StatTestKind::PopulationStabilityIndex,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ColumnValues, ProfileBuilder};

    #[test]
    fn product_rows_fit_the_product_schema() {
        let mut builder = ProfileBuilder::new(product_schema(3), 100).unwrap();
        let full = ProductObservation {
            text: "Housse de coussin en coton pour le salon".into(),
            description_empty: false,
            out_of_vocabulary_share: Some(0.1),
            image: Some(ImageStats::from_rgb(2, 1, &[255, 255, 255, 0, 0, 0]).unwrap()),
            embedding_components: vec![0.5, -0.2, 0.1],
            predicted_class: Some("1920".into()),
            confidence: Some(0.93),
        };
        builder.push_row(product_row(&full, 3)).unwrap();
        builder
            .push_row(product_row(&ProductObservation::default(), 3))
            .unwrap();
        let profile = builder.build();
        let language = profile.column("language").unwrap();
        assert_eq!(
            language.values,
            ColumnValues::Categorical(vec!["fr".into(), "other".into()])
        );
        let width = profile.column("image_width").unwrap();
        assert_eq!((width.values.len(), width.missing_count), (1, 1));
        assert_eq!(
            profile.column("text").unwrap().missing_count,
            1,
            "an empty text is missing"
        );
        assert_eq!(
            profile.column("embedding_pc3").unwrap().values,
            ColumnValues::Numeric(vec![0.1])
        );
        let options = product_drift_options();
        assert_eq!(
            options.per_column_test.get(PREDICTED_CLASS_COLUMN),
            Some(&StatTestKind::PopulationStabilityIndex)
        );
    }
}

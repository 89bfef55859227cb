//! `prodcat predict`: classify one product from the command line, or a CSV file of any size
//! (streamed, in parallel, with a progress bar).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use prodcat_catalogue::PredictionSource;
use prodcat_model::{Branch, ProductPrediction};
use prodcat_platform::{LogMode, Platform, Predictor, ProductToClassify, Requester};

use crate::output::Progress;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model: version id, unique prefix, alias (champion, challenger) or latest.
    #[arg(long, default_value = "champion", env = "PRODCAT_MODEL")]
    pub model: String,
    /// The product's title.
    #[arg(long, conflicts_with = "input")]
    pub designation: Option<String>,
    /// The product's description (HTML is fine).
    #[arg(long, default_value = "", conflicts_with = "input")]
    pub description: String,
    /// The product's photo (JPEG or PNG).
    #[arg(long, conflicts_with = "input")]
    pub image: Option<PathBuf>,
    /// A CSV in the challenge format (,designation,description,productid,imageid) to classify.
    #[arg(long, requires = "output")]
    pub input: Option<PathBuf>,
    /// Where to write the predictions of --input (CSV).
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Images folder for --input (image_<imageid>_product_<productid>.jpg).
    #[arg(long, requires = "input")]
    pub images: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(settings: &Settings, args: PredictArgs) -> anyhow::Result<()> {
    let platform = Platform::from_settings(settings).await?;
    let predictor = Predictor::for_reference(&platform, &args.model)
        .await
        .with_context(|| format!("failed to load the model {:?}", args.model))?;
    if let (Some(input), Some(output)) = (&args.input, &args.output) {
        return predict_file(&predictor, input, output, args.images.as_ref()).await;
    }
    let designation = args.designation.clone().unwrap_or_default();
    let image = match &args.image {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?,
        ),
        None => None,
    };
    if designation.trim().is_empty() && args.description.trim().is_empty() && image.is_none() {
        anyhow::bail!(
            "nothing to classify: give --designation (and optionally --description, --image), or --input FILE --output FILE"
        );
    }
    let prediction = predictor
        .predict(
            ProductToClassify {
                designation,
                description: args.description.clone(),
                image: image.map(bytes::Bytes::from),
                explain: true,
            },
            &Requester::new(PredictionSource::Predict).client("command line"),
            LogMode::Caller,
        )
        .await
        .context("the product could not be classified")?
        .prediction;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&prediction)?);
        return Ok(());
    }
    print_prediction(&prediction);
    Ok(())
}

fn print_prediction(prediction: &ProductPrediction) {
    println!(
        "{} {} (confidence {:.3}, {})",
        prediction.category,
        prediction.category.name(),
        prediction.confidence,
        if prediction.automatic {
            "automatic decision"
        } else {
            "below the threshold: needs review"
        }
    );
    println!(
        "  model {}, branches: {}{}, {} µs",
        prediction.model_version,
        Branch::label(&prediction.branches),
        prediction
            .fusion_weight
            .map(|w| format!(" (image weight {w:.2})"))
            .unwrap_or_default(),
        prediction.elapsed_microseconds
    );
    println!("  top 5:");
    for scored in &prediction.top {
        println!(
            "    {:>5} {:<34} {:.3}",
            scored.category.value(),
            scored.category.name(),
            scored.probability
        );
    }
    if let Some(explanation) = &prediction.explanation {
        println!("  n-grams that pushed {} most:", explanation.category);
        for term in explanation.terms.iter().filter(|t| t.contribution > 0.0) {
            println!(
                "    {:+.3}  {:?} ({:?})",
                term.contribution, term.term, term.analyzer
            );
        }
    }
}

/// One row of an input file: index, product id, designation, description, image bytes.
type InputRow = (String, String, String, String, Option<Vec<u8>>);

/// Classifies a chunk of input rows and writes one output row each; returns how many rows were
/// written and how many of them could not be classified.
async fn classify_chunk(
    predictor: &Predictor,
    chunk: &[InputRow],
    writer: &mut csv::Writer<std::fs::File>,
) -> anyhow::Result<(u64, u64)> {
    let mut rows = 0u64;
    let mut failures = 0u64;
    let products: Vec<ProductToClassify> = chunk
        .iter()
        .map(
            |(_, _, designation, description, image)| ProductToClassify {
                designation: designation.clone(),
                description: description.clone(),
                image: image.clone().map(bytes::Bytes::from),
                explain: false,
            },
        )
        .collect();
    let predictions = predictor
        .predict_batch(
            products,
            &[Requester::new(PredictionSource::Batch).client("command line")],
            LogMode::Caller,
        )
        .await?;
    for ((index, product, ..), prediction) in chunk.iter().zip(predictions) {
        rows += 1;
        match prediction.map(|predicted| predicted.prediction) {
            Ok(p) => writer.write_record([
                index.clone(),
                product.clone(),
                p.category.to_string(),
                p.category.name().to_string(),
                format!("{:.4}", p.confidence),
                p.automatic.to_string(),
                Branch::label(&p.branches),
                p.top
                    .iter()
                    .map(|s| format!("{}:{:.4}", s.category, s.probability))
                    .collect::<Vec<_>>()
                    .join(";"),
                String::new(),
            ])?,
            Err(error) => {
                failures += 1;
                writer.write_record([
                    index.as_str(),
                    product.as_str(),
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    &error.to_string(),
                ])?
            }
        }
    }
    Ok((rows, failures))
}

async fn predict_file(
    predictor: &Predictor,
    input: &std::path::Path,
    output: &std::path::Path,
    images: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let total = std::fs::metadata(input)
        .with_context(|| format!("cannot read {}", input.display()))?
        .len();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let headers = reader.byte_headers()?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name.as_bytes());
    let designation_column = column("designation")
        .with_context(|| format!("{}: no designation column", input.display()))?;
    let description_column = column("description");
    let product_column = column("productid");
    let image_column = column("imageid");
    let mut writer = csv::Writer::from_path(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    writer.write_record([
        "",
        "productid",
        "prdtypecode",
        "category",
        "confidence",
        "automatic",
        "branches",
        "top5",
        "error",
    ])?;
    let progress = Progress::new("predicting", total, "bytes");
    let mut rows = 0u64;
    let mut failures = 0u64;
    let mut chunk: Vec<InputRow> = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let more = reader.read_byte_record(&mut record)?;
        if more {
            let text = |index: Option<usize>| {
                index
                    .and_then(|i| record.get(i))
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default()
            };
            let product = text(product_column);
            let image = match images {
                Some(folder) => std::fs::read(folder.join(format!(
                    "image_{}_product_{}.jpg",
                    text(image_column),
                    product
                )))
                .ok(),
                None => None,
            };
            chunk.push((
                text(Some(0)),
                product,
                text(Some(designation_column)),
                text(description_column),
                image,
            ));
        }
        if chunk.len() >= 1024 || (!more && !chunk.is_empty()) {
            let (written, failed) = classify_chunk(predictor, &chunk, &mut writer).await?;
            rows += written;
            failures += failed;
            chunk.clear();
            progress.set(reader.position().byte(), &format!("{rows} rows"));
        }
        if !more {
            break;
        }
    }
    writer.flush()?;
    progress.finish();
    println!(
        "Classified {rows} products into {} ({failures} could not be classified; see the error column)",
        output.display()
    );
    std::io::stdout().flush()?;
    Ok(())
}

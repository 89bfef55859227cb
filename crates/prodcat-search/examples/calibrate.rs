//! Measures, on the real sample, the similarity ranges behind the search defaults: the
//! query-to-product cosine from which products count as matches by meaning, and the text and
//! image cosines typical of unrelated products (the floors of "similar products") and how
//! often a nearest neighbour shares the category at each similarity. Prints markdown tables.
//!
//! ```text
//! PRODCAT_SAMPLE_DATA=/work/shared/data/rakuten \
//!   cargo run --release -p prodcat-search --example calibrate -- --cache /tmp/prodcat-search-cache
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use prodcat_domain::CategoryCode;
use prodcat_search::{
    combined_similarity, embedding_text, E5Embedder, EmbeddingCache, SentenceEmbedder,
    SimilarityOptions,
};

/// Shopper queries and the category a good answer belongs to.
const QUERIES: &[(&str, u16)] = &[
    ("roman d'occasion", 10),
    ("livre ancien", 10),
    ("jeu ps4", 40),
    ("jeu nintendo switch", 40),
    ("manette sans fil", 50),
    ("chargeur pour manette", 50),
    ("console de jeux portable", 60),
    ("console rétro", 60),
    ("figurine pop", 1140),
    ("figurine dragon ball", 1140),
    ("carte pokemon", 1160),
    ("cartes yu-gi-oh", 1160),
    ("figurine warhammer", 1180),
    ("jeu de rôle", 1180),
    ("peluche pour bébé", 1280),
    ("jouet en bois", 1280),
    ("jeu de société en famille", 1281),
    ("puzzle 1000 pièces", 1281),
    ("drone avec caméra", 1300),
    ("maquette avion", 1300),
    ("chaussettes enfant", 1301),
    ("baby-foot", 1301),
    ("pistolet à eau", 1302),
    ("déguisement anniversaire", 1302),
    ("poussette bébé", 1320),
    ("siège auto", 1320),
    ("chaise de salle à manger", 1560),
    ("meuble tv", 1560),
    ("housse de coussin", 1920),
    ("parure de lit", 1920),
    ("café en grains", 1940),
    ("thé vert bio", 1940),
    ("décoration murale", 2060),
    ("guirlande lumineuse", 2060),
    ("collier pour chien", 2220),
    ("arbre à chat", 2220),
    ("magazine ancien", 2280),
    ("revue mensuelle", 2280),
    ("lot de livres", 2403),
    ("bande dessinée", 2403),
    ("lot de jeux vidéo", 2462),
    ("cahier a4", 2522),
    ("stylo bille", 2522),
    ("salon de jardin", 2582),
    ("parasol", 2582),
    ("piscine hors sol", 2583),
    ("pompe de filtration piscine", 2583),
    ("perceuse sans fil", 2585),
    ("tondeuse à gazon", 2585),
    ("livre de cuisine", 2705),
    ("roman policier", 2705),
    ("jeu pc à télécharger", 2905),
    ("bassin pour se baigner en été", 2583),
    ("de quoi jouer dehors avec les enfants", 1302),
    ("something to keep my cat busy", 2220),
];

/// Things the catalogue does not sell: their best matches show what "unrelated" scores.
const UNRELATED_QUERIES: &[&str] = &[
    "billet d'avion pas cher",
    "assurance auto",
    "réparation d'écran de smartphone",
    "location de voiture",
    "abonnement internet fibre",
    "plombier urgence",
    "cours de yoga en ligne",
    "avocat divorce",
    "prêt immobilier taux",
    "médecin généraliste",
];

struct Arguments {
    sample: PathBuf,
    models: PathBuf,
    cache: PathBuf,
}

fn arguments() -> anyhow::Result<Arguments> {
    let mut sample = std::env::var_os("PRODCAT_SAMPLE_DATA").map(PathBuf::from);
    let mut models = std::env::var_os("PRODCAT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let mut cache = std::env::temp_dir().join("prodcat-search-calibration");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sample" => sample = Some(PathBuf::from(value)),
            "--models" => models = PathBuf::from(value),
            "--cache" => cache = PathBuf::from(value),
            other => bail!("unknown flag {other}; expected --sample, --models or --cache"),
        }
    }
    Ok(Arguments {
        sample: sample.context("set PRODCAT_SAMPLE_DATA or pass --sample")?,
        models,
        cache,
    })
}

struct Product {
    product_id: i64,
    image_id: i64,
    category: CategoryCode,
    text: String,
}

fn read_sample(directory: &Path) -> anyhow::Result<Vec<Product>> {
    let mut labels = HashMap::new();
    for record in csv::Reader::from_path(directory.join("text/Y_train_sample.csv"))?.records() {
        let record = record?;
        labels.insert(record[0].to_string(), CategoryCode::parse(&record[1])?);
    }
    let mut products = Vec::new();
    for record in csv::Reader::from_path(directory.join("text/X_train_sample.csv"))?.records() {
        let record = record?;
        products.push(Product {
            product_id: record[3].trim().parse()?,
            image_id: record[4].trim().parse()?,
            category: *labels.get(&record[0]).context("row without a label")?,
            text: embedding_text(&record[1], &record[2], 30),
        });
    }
    Ok(products)
}

fn dot(left: &[f32], right: &[f32]) -> f32 {
    left.iter().zip(right).map(|(a, b)| a * b).sum()
}

fn normalised(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = dot(&vector, &vector).sqrt().max(1e-12);
    vector.iter_mut().for_each(|value| *value /= norm);
    vector
}

fn quantile(values: &mut [f32], q: f64) -> f32 {
    values.sort_by(f32::total_cmp);
    if values.is_empty() {
        return f32::NAN;
    }
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// Cosines of pairs from different categories and from the same category (all pairs).
fn pair_quantiles(vectors: &[Vec<f32>], categories: &[CategoryCode], title: &str) {
    let mut same = Vec::new();
    let mut different = Vec::new();
    for i in 0..vectors.len() {
        for j in (i + 1)..vectors.len() {
            let cosine = dot(&vectors[i], &vectors[j]);
            if categories[i] == categories[j] {
                same.push(cosine);
            } else {
                different.push(cosine);
            }
        }
    }
    println!("\n{title}: cosine of product pairs\n");
    println!("| pairs | count | p10 | p50 | p90 | p99 |");
    println!("|---|---|---|---|---|---|");
    for (name, values) in [
        ("different category", &mut different),
        ("same category", &mut same),
    ] {
        let count = values.len();
        println!(
            "| {name} | {count} | {:.3} | {:.3} | {:.3} | {:.3} |",
            quantile(values, 0.10),
            quantile(values, 0.50),
            quantile(values, 0.90),
            quantile(values, 0.99)
        );
    }
}

/// For each product, its nearest other product: how often it shares the category, by bin of
/// the (combined) similarity.
fn neighbour_agreement(
    score: &dyn Fn(usize, usize) -> Option<f32>,
    count: usize,
    categories: &[CategoryCode],
    bins: &[f32],
    title: &str,
) {
    let mut totals = vec![(0usize, 0usize); bins.len() + 1];
    for i in 0..count {
        let best = (0..count)
            .filter(|j| *j != i)
            .filter_map(|j| score(i, j).map(|s| (s, j)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((similarity, j)) = best {
            let bin = bins
                .iter()
                .position(|edge| similarity < *edge)
                .unwrap_or(bins.len());
            totals[bin].0 += 1;
            totals[bin].1 += usize::from(categories[i] == categories[j]);
        }
    }
    println!("\n{title}: nearest neighbour shares the category\n");
    println!("| similarity of the nearest | products | same category |");
    println!("|---|---|---|");
    for (bin, (products, same)) in totals.iter().enumerate() {
        let range = match bin {
            0 => format!("< {:.2}", bins[0]),
            b if b == bins.len() => format!(">= {:.2}", bins[b - 1]),
            b => format!("{:.2} - {:.2}", bins[b - 1], bins[b]),
        };
        let share = if *products > 0 {
            *same as f64 / *products as f64 * 100.0
        } else {
            f64::NAN
        };
        println!("| {range} | {products} | {share:.0} % |");
    }
}

fn main() -> anyhow::Result<()> {
    let arguments = arguments()?;
    let products = read_sample(&arguments.sample)?;
    let categories: Vec<CategoryCode> = products.iter().map(|p| p.category).collect();
    println!("real sample: {} labelled products", products.len());

    // Text vectors (cached between runs).
    let embedder = E5Embedder::load(&arguments.models.join("e5-small"))?;
    let mut cache =
        EmbeddingCache::open(&arguments.cache, embedder.model_id(), embedder.dimension())?;
    let keys: Vec<[u8; 32]> = products.iter().map(|p| sha2_key(&p.text)).collect();
    let wanted: HashSet<[u8; 32]> = keys.iter().copied().collect();
    let mut vectors = cache.get_many(&wanted)?;
    let missing: Vec<usize> = (0..products.len())
        .filter(|i| !vectors.contains_key(&keys[*i]))
        .collect();
    let started = Instant::now();
    for batch in missing.chunks(64) {
        let texts: Vec<&str> = batch.iter().map(|i| products[*i].text.as_str()).collect();
        let embedded = embedder.embed_passages(&texts);
        let entries: Vec<([u8; 32], prodcat_search::QuantizedVector)> = batch
            .iter()
            .zip(embedded)
            .filter_map(|(i, vector)| {
                prodcat_search::QuantizedVector::from_values(&vector).map(|q| (keys[*i], q))
            })
            .collect();
        cache.append(&entries)?;
        vectors.extend(entries);
    }
    cache.sync()?;
    eprintln!(
        "embedded {} texts in {:.1} s",
        missing.len(),
        started.elapsed().as_secs_f64()
    );
    let text_vectors: Vec<Vec<f32>> = keys.iter().map(|key| vectors[key].to_values()).collect();

    // Queries against products.
    println!("\n## Query to product cosine (multilingual-e5-small, query: / passage:)\n");
    let bins = [0.78f32, 0.80, 0.81, 0.82, 0.83, 0.84, 0.86];
    let mut per_bin = vec![(0usize, 0usize); bins.len() + 1];
    let mut top_scores = Vec::new();
    for (query, code) in QUERIES {
        let expected = CategoryCode::from_u16(*code)?;
        let vector = normalised(embedder.embed_query(query));
        let mut scored: Vec<(f32, usize)> = text_vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (dot(&vector, v), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        top_scores.push(scored[0].0);
        for (similarity, index) in scored.iter().take(20) {
            let bin = bins
                .iter()
                .position(|edge| similarity < edge)
                .unwrap_or(bins.len());
            per_bin[bin].0 += 1;
            per_bin[bin].1 += usize::from(categories[*index] == expected);
        }
    }
    println!(
        "Top 20 products of {} shopper queries, by cosine bin:\n",
        QUERIES.len()
    );
    println!("| cosine | results | in the expected category |");
    println!("|---|---|---|");
    for (bin, (results, good)) in per_bin.iter().enumerate() {
        let range = match bin {
            0 => format!("< {:.2}", bins[0]),
            b if b == bins.len() => format!(">= {:.2}", bins[b - 1]),
            b => format!("{:.2} - {:.2}", bins[b - 1], bins[b]),
        };
        let share = if *results > 0 {
            *good as f64 / *results as f64 * 100.0
        } else {
            f64::NAN
        };
        println!("| {range} | {results} | {share:.0} % |");
    }
    let mut unrelated_top = Vec::new();
    for query in UNRELATED_QUERIES {
        let vector = normalised(embedder.embed_query(query));
        let best = text_vectors
            .iter()
            .map(|v| dot(&vector, v))
            .fold(f32::MIN, f32::max);
        unrelated_top.push(best);
    }
    println!(
        "\nBest cosine of the shopper queries: p10 {:.3}, p50 {:.3}; of {} queries for things the catalogue does not sell: p50 {:.3}, max {:.3}",
        quantile(&mut top_scores.clone(), 0.10),
        quantile(&mut top_scores, 0.50),
        UNRELATED_QUERIES.len(),
        quantile(&mut unrelated_top.clone(), 0.50),
        quantile(&mut unrelated_top, 1.0)
    );

    println!("\n## Product to product (similar products)");
    pair_quantiles(&text_vectors, &categories, "Text (e5 passage vectors)");
    let text_score = |i: usize, j: usize| Some(dot(&text_vectors[i], &text_vectors[j]));
    neighbour_agreement(
        &text_score,
        products.len(),
        &categories,
        &[0.80, 0.84, 0.86, 0.88, 0.90, 0.92, 0.95],
        "Text",
    );

    // Image features of the labelled images.
    let extractor = prodcat_vision::ImageFeatureExtractor::load(
        &arguments.models.join("mobilenet-v2"),
        prodcat_vision::PreprocessOptions::product_features(),
    )?;
    let mut image_rows: Vec<(i64, i64, CategoryCode, PathBuf)> = Vec::new();
    for record in
        csv::Reader::from_path(arguments.sample.join("images/images_index.csv"))?.records()
    {
        let record = record?;
        if &record[1] != "train" {
            continue;
        }
        image_rows.push((
            record[3].parse()?,
            record[4].parse()?,
            CategoryCode::parse(&record[5])?,
            arguments.sample.join("images").join(&record[0]),
        ));
    }
    let started = Instant::now();
    let paths: Vec<&PathBuf> = image_rows.iter().map(|row| &row.3).collect();
    let features: Vec<Option<Vec<f32>>> = extractor
        .extract_files(&paths)
        .into_iter()
        .map(|result| result.ok().map(|output| normalised(output.features)))
        .collect();
    eprintln!(
        "image features of {} images in {:.1} s",
        paths.len(),
        started.elapsed().as_secs_f64()
    );
    let (image_vectors, image_categories): (Vec<Vec<f32>>, Vec<CategoryCode>) = features
        .iter()
        .zip(&image_rows)
        .filter_map(|(feature, row)| feature.clone().map(|f| (f, row.2)))
        .unzip();
    pair_quantiles(
        &image_vectors,
        &image_categories,
        "Image (MobileNetV2 pooled features)",
    );
    let image_score = |i: usize, j: usize| Some(dot(&image_vectors[i], &image_vectors[j]));
    neighbour_agreement(
        &image_score,
        image_vectors.len(),
        &image_categories,
        &[0.45, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80],
        "Image",
    );

    // Products with both: text alone, image alone, combined with the default weights.
    let by_image: HashMap<(i64, i64), Vec<f32>> = image_rows
        .iter()
        .zip(&features)
        .filter_map(|(row, feature)| feature.clone().map(|f| ((row.0, row.1), f)))
        .collect();
    let both: Vec<(usize, &Vec<f32>)> = products
        .iter()
        .enumerate()
        .filter_map(|(i, p)| by_image.get(&(p.image_id, p.product_id)).map(|f| (i, f)))
        .collect();
    let both_categories: Vec<CategoryCode> = both.iter().map(|(i, _)| categories[*i]).collect();
    println!("\n## Products with text and image ({})", both.len());
    let options = SimilarityOptions::default();
    let rescaled_bins = [0.0f32, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6];
    for (name, text_weight, image_weight) in [
        ("text only", 1.0f32, 0.0f32),
        ("image only", 0.0, 1.0),
        ("combined 0.6 / 0.4", 0.6, 0.4),
        ("combined 0.5 / 0.5", 0.5, 0.5),
    ] {
        let weights = SimilarityOptions {
            text_weight,
            image_weight,
            ..options
        };
        let score = |a: usize, b: usize| {
            let text = dot(&text_vectors[both[a].0], &text_vectors[both[b].0]);
            let image = dot(both[a].1, both[b].1);
            match (text_weight > 0.0, image_weight > 0.0) {
                (true, true) => combined_similarity(&weights, Some(text), Some(image)),
                (true, false) => combined_similarity(&weights, Some(text), None),
                _ => combined_similarity(&weights, None, Some(image)),
            }
        };
        neighbour_agreement(
            &score,
            both.len(),
            &both_categories,
            &rescaled_bins,
            &format!("Rescaled similarity, {name}"),
        );
    }
    Ok(())
}

fn sha2_key(text: &str) -> [u8; 32] {
    let hex = prodcat_domain::sha256_hex(text.as_bytes());
    let mut key = [0u8; 32];
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).unwrap_or(0);
    }
    key
}

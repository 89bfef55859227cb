//! The demo catalogue: a deterministic, generated stand-in for the marketplace data, written in the
//! exact challenge layout (`X_train_update.csv`, `Y_train_CVw08PX.csv`,
//! `images/image_train/image_<imageid>_product_<productid>.jpg`).
//!
//! Categories follow the real class proportions; titles are French, descriptions are HTML (about
//! 35% empty) with entities; each image is a 500x500 JPEG with a white border around a "product"
//! whose shape, colours and texture depend on the category. Everything is a pure function of the
//! seed and the product's position, so output is identical whatever the thread count.

mod picture;
mod vocabulary;

use std::io::Write;
use std::path::{Path, PathBuf};

use prodcat_domain::CategoryCode;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::DatasetError;
use vocabulary::{CategoryWords, CATEGORY_WORDS, SHARED_QUALIFIERS, SHARED_SENTENCES};

/// Product counts per category in the full reference training set (84,916 rows).
pub const REFERENCE_CLASS_COUNTS: [(u16, u32); 27] = [
    (10, 3116),
    (40, 2508),
    (50, 1681),
    (60, 832),
    (1140, 2671),
    (1160, 3953),
    (1180, 764),
    (1280, 4870),
    (1281, 2070),
    (1300, 5045),
    (1301, 807),
    (1302, 2491),
    (1320, 3241),
    (1560, 5073),
    (1920, 4303),
    (1940, 803),
    (2060, 4993),
    (2220, 824),
    (2280, 4760),
    (2403, 4774),
    (2462, 1421),
    (2522, 4989),
    (2582, 2589),
    (2583, 10209),
    (2585, 2496),
    (2705, 2761),
    (2905, 872),
];

/// Groups of categories that share vocabulary in the generated text.
const CONFUSABLE_GROUPS: &[&[u16]] = &[
    &[10, 2705, 2403, 2280],
    &[40, 2462, 2905, 60, 50],
    &[1280, 1281, 1302, 1301, 1140, 1180, 1160, 1320],
    &[1560, 2582, 2060, 1920],
    &[2583, 2585, 2582, 1302],
    &[1940, 2220, 2522],
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub products: usize,
    pub seed: u64,
    /// Write images (the text-only mode is for quick text experiments).
    pub images: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            products: 3000,
            seed: 42,
            images: true,
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct GenerateSummary {
    pub out_dir: PathBuf,
    pub products: usize,
    pub images: usize,
    pub empty_descriptions: usize,
    pub class_counts: Vec<(CategoryCode, usize)>,
}

/// One generated product row.
#[derive(Debug, Clone)]
pub struct GeneratedProduct {
    pub index: usize,
    pub designation: String,
    pub description: String,
    pub product_id: i64,
    pub image_id: i64,
    pub category: CategoryCode,
}

/// Category of every product position: exact reference proportions (largest remainder, at least
/// one per category when there is room), shuffled with the seed.
pub fn category_plan(products: usize, seed: u64) -> Vec<CategoryCode> {
    let total: u64 = REFERENCE_CLASS_COUNTS.iter().map(|(_, c)| *c as u64).sum();
    let mut counts: Vec<(usize, usize, u64)> = REFERENCE_CLASS_COUNTS
        .iter()
        .enumerate()
        .map(|(position, (_, count))| {
            let exact = *count as u64 * products as u64;
            let floor = (exact / total) as usize;
            let floor = if products >= 27 { floor.max(1) } else { floor };
            (position, floor, exact % total)
        })
        .collect();
    let mut assigned: usize = counts.iter().map(|c| c.1).sum();
    counts.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let mut cursor = 0;
    while assigned < products {
        counts[cursor % 27].1 += 1;
        assigned += 1;
        cursor += 1;
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let mut cursor = 0;
    while assigned > products {
        if counts[cursor % 27].1 > 1 {
            counts[cursor % 27].1 -= 1;
            assigned -= 1;
        }
        cursor += 1;
    }
    counts.sort_by_key(|c| c.0);
    let mut plan: Vec<CategoryCode> = counts
        .iter()
        .flat_map(|(position, count, _)| {
            let code = CategoryCode::from_u16(REFERENCE_CLASS_COUNTS[*position].0)
                .expect("reference codes are valid");
            std::iter::repeat_n(code, *count)
        })
        .collect();
    plan.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    plan
}

fn words_of(code: u16) -> &'static CategoryWords {
    CATEGORY_WORDS
        .iter()
        .find(|w| w.code == code)
        .unwrap_or(&CATEGORY_WORDS[0])
}

fn sibling_of(code: u16, rng: &mut ChaCha8Rng) -> u16 {
    let groups: Vec<&&[u16]> = CONFUSABLE_GROUPS
        .iter()
        .filter(|g| g.contains(&code))
        .collect();
    match groups.choose(rng) {
        Some(group) => *group.choose(rng).unwrap_or(&code),
        None => code,
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &'a [&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or("")
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Encodes a few accented letters as HTML entities, the way marketplace feeds often do.
fn entity_encode(text: &str, rng: &mut ChaCha8Rng) -> String {
    if rng.gen_bool(0.5) {
        return text.to_string();
    }
    text.replace('é', "&eacute;")
        .replace('è', "&egrave;")
        .replace('à', "&agrave;")
        .replace('\'', "&#39;")
}

fn generate_title(code: u16, rng: &mut ChaCha8Rng) -> String {
    // Some titles borrow the noun of a related category, as real listings do.
    let noun_source = if rng.gen_bool(0.15) {
        sibling_of(code, rng)
    } else {
        code
    };
    let words = words_of(code);
    let noun = pick(rng, words_of(noun_source).nouns);
    let mut parts = vec![capitalise(noun)];
    if rng.gen_bool(0.8) {
        parts.push(pick(rng, words.qualifiers).to_string());
    }
    if rng.gen_bool(0.6) {
        parts.push(pick(rng, words.brands).to_string());
    }
    if rng.gen_bool(0.35) {
        parts.push(pick(rng, SHARED_QUALIFIERS).to_string());
    }
    if rng.gen_bool(0.3) {
        parts.push(pick(rng, words.qualifiers).to_string());
    }
    if rng.gen_bool(0.25) {
        parts.push(format!("Réf {}", rng.gen_range(1000..99999)));
    }
    let separator = if rng.gen_bool(0.5) { " " } else { " - " };
    parts.join(separator)
}

fn generate_description(code: u16, rng: &mut ChaCha8Rng) -> String {
    if rng.gen_bool(0.35) {
        return String::new();
    }
    let words = words_of(if rng.gen_bool(0.1) {
        sibling_of(code, rng)
    } else {
        code
    });
    let mut html = String::new();
    let paragraphs = rng.gen_range(1..=3);
    for _ in 0..paragraphs {
        let mut sentences = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            sentences.push(entity_encode(pick(rng, words.sentences), rng));
        }
        if rng.gen_bool(0.5) {
            sentences.push(entity_encode(pick(rng, SHARED_SENTENCES), rng));
        }
        let joined = sentences.join(if rng.gen_bool(0.5) { " " } else { "<br />" });
        if rng.gen_bool(0.7) {
            html.push_str(&format!("<p>{joined}</p>"));
        } else {
            html.push_str(&joined);
            html.push_str("<br>");
        }
    }
    if rng.gen_bool(0.3) {
        html.push_str("<ul>");
        for _ in 0..rng.gen_range(2..=4) {
            html.push_str(&format!(
                "<li><strong>{}</strong> : {}</li>",
                capitalise(pick(
                    rng,
                    &["matière", "couleur", "marque", "référence", "état"]
                )),
                entity_encode(pick(rng, words.qualifiers), rng)
            ));
        }
        html.push_str("</ul>");
    }
    html
}

/// The text fields and ids of product `index` (pure function of seed and index).
pub fn generate_product(index: usize, category: CategoryCode, seed: u64) -> GeneratedProduct {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64 + 1);
    let code = category.value();
    let designation = generate_title(code, &mut rng);
    let description = generate_description(code, &mut rng);
    GeneratedProduct {
        index,
        designation,
        description,
        product_id: 1_000_000_000 + index as i64 * 1000 + rng.gen_range(0..1000),
        image_id: 1_100_000_000 + index as i64 * 1000 + rng.gen_range(0..1000),
        category,
    }
}

/// The 500x500 JPEG of product `index`.
pub fn generate_image(index: usize, category: CategoryCode, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_1a9e);
    rng.set_stream(index as u64 + 1);
    picture::render_product_jpeg(category, &mut rng)
}

/// The image file name of a product in the challenge layout.
pub fn image_file_name(image_id: i64, product_id: i64) -> String {
    format!("image_{image_id}_product_{product_id}.jpg")
}

/// Writes the demo catalogue into `out_dir` in the challenge layout.
/// `progress` is called with the number of products written so far.
pub fn generate_catalogue(
    out_dir: &Path,
    options: &GenerateOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<GenerateSummary, DatasetError> {
    if options.products == 0 {
        return Err(DatasetError::InvalidOption(
            "--products must be at least 1".to_string(),
        ));
    }
    let io_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| DatasetError::Io {
            path: path.clone(),
            source,
        }
    };
    let image_dir = out_dir.join("images").join("image_train");
    std::fs::create_dir_all(&image_dir).map_err(io_error(&image_dir))?;
    let plan = category_plan(options.products, options.seed);
    let texts_path = out_dir.join("X_train_update.csv");
    let labels_path = out_dir.join("Y_train_CVw08PX.csv");
    let mut texts = csv::Writer::from_path(&texts_path).map_err(|e| DatasetError::Csv {
        path: texts_path.display().to_string(),
        source: e,
    })?;
    let mut labels = csv::Writer::from_path(&labels_path).map_err(|e| DatasetError::Csv {
        path: labels_path.display().to_string(),
        source: e,
    })?;
    let csv_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| DatasetError::Csv {
            path: path.clone(),
            source,
        }
    };
    texts
        .write_record(["", "designation", "description", "productid", "imageid"])
        .map_err(csv_error(&texts_path))?;
    labels
        .write_record(["", "prdtypecode"])
        .map_err(csv_error(&labels_path))?;
    let mut empty_descriptions = 0;
    let mut images = 0;
    const CHUNK: usize = 256;
    for chunk_start in (0..options.products).step_by(CHUNK) {
        let chunk_end = (chunk_start + CHUNK).min(options.products);
        let products: Vec<GeneratedProduct> = (chunk_start..chunk_end)
            .into_par_iter()
            .map(|index| generate_product(index, plan[index], options.seed))
            .collect();
        if options.images {
            products
                .par_iter()
                .map(|product| {
                    let bytes = generate_image(product.index, product.category, options.seed);
                    let path =
                        image_dir.join(image_file_name(product.image_id, product.product_id));
                    let mut file = std::fs::File::create(&path).map_err(io_error(&path))?;
                    file.write_all(&bytes).map_err(io_error(&path))
                })
                .collect::<Result<Vec<()>, DatasetError>>()?;
            images += products.len();
        }
        for product in &products {
            if product.description.is_empty() {
                empty_descriptions += 1;
            }
            texts
                .write_record([
                    product.index.to_string(),
                    product.designation.clone(),
                    product.description.clone(),
                    product.product_id.to_string(),
                    product.image_id.to_string(),
                ])
                .map_err(csv_error(&texts_path))?;
            labels
                .write_record([product.index.to_string(), product.category.to_string()])
                .map_err(csv_error(&labels_path))?;
        }
        progress(chunk_end);
    }
    texts.flush().map_err(io_error(&texts_path))?;
    labels.flush().map_err(io_error(&labels_path))?;
    let notice = out_dir.join("GENERATED-DATA.txt");
    std::fs::write(
        &notice,
        format!(
            "This folder holds GENERATED demo data, not real marketplace products.\n\
             Written by `prodcat data generate --products {} --seed {}` in the challenge layout.\n",
            options.products, options.seed
        ),
    )
    .map_err(io_error(&notice))?;
    let mut class_counts: Vec<(CategoryCode, usize)> =
        CategoryCode::all().map(|code| (code, 0)).collect();
    for code in &plan {
        class_counts[code.index()].1 += 1;
    }
    Ok(GenerateSummary {
        out_dir: out_dir.to_path_buf(),
        products: options.products,
        images,
        empty_descriptions,
        class_counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_follows_reference_proportions() {
        let plan = category_plan(84_916, 1);
        assert_eq!(plan.len(), 84_916);
        for (code, count) in REFERENCE_CLASS_COUNTS {
            let planned = plan.iter().filter(|c| c.value() == code).count();
            assert_eq!(planned, count as usize, "code {code}");
        }
        let small = category_plan(100, 1);
        assert_eq!(small.len(), 100);
        for code in CategoryCode::all() {
            assert!(
                small.contains(&code),
                "{code} missing from a 100-product plan"
            );
        }
    }

    #[test]
    fn products_are_deterministic_and_ids_unique() {
        let plan = category_plan(500, 7);
        let first: Vec<_> = (0..500).map(|i| generate_product(i, plan[i], 7)).collect();
        let second: Vec<_> = (0..500).map(|i| generate_product(i, plan[i], 7)).collect();
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(a.designation, b.designation);
            assert_eq!(a.description, b.description);
            assert_eq!(a.product_id, b.product_id);
        }
        let mut ids: Vec<i64> = first.iter().map(|p| p.product_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 500);
        let empty = first.iter().filter(|p| p.description.is_empty()).count();
        assert!(
            (120..230).contains(&empty),
            "{empty} empty descriptions of 500"
        );
        assert_ne!(
            generate_product(3, plan[3], 8).designation,
            first[3].designation
        );
    }

    #[test]
    fn images_are_500_square_jpegs_with_white_border() {
        let code = CategoryCode::from_u16(2583).unwrap();
        let bytes = generate_image(0, code, 1);
        assert_eq!(bytes, generate_image(0, code, 1));
        let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), (500, 500));
        let corner = decoded.get_pixel(2, 2);
        assert!(corner.0.iter().all(|&c| c > 235), "corner {corner:?}");
        let centre = decoded.get_pixel(250, 250);
        assert!(centre.0.iter().any(|&c| c < 230), "centre {centre:?}");
    }
}

//! The simulated traffic: the pools of real (or generated) products it draws from without
//! replacement, the drifted listings (foreign-language products of a few focus categories,
//! degraded French titles), and each week's mix of clean and drifted items.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use prodcat_domain::{sha256_hex, CategoryCode};
use prodcat_drift::rng::SplitMix64;

use super::{SimulationOptions, FOCUS_CATEGORIES, FOREIGN_SHARE_OF_DRIFT, WEEK_MS};
use crate::PipelineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemKind {
    Clean,
    Foreign,
    Degraded,
}

#[derive(Debug, Clone)]
pub(super) struct SimProduct {
    pub(super) index: i64,
    pub(super) product_id: i64,
    pub(super) image_id: i64,
    pub(super) designation: String,
    pub(super) description: String,
    pub(super) category: CategoryCode,
    pub(super) image: Option<PathBuf>,
}

/// The products the simulation draws from.
pub(super) struct Pools {
    pub(super) source: String,
    pub(super) french: Vec<SimProduct>,
    pub(super) foreign: Vec<SimProduct>,
    pub(super) images: Option<PathBuf>,
}

pub(super) fn input_error(path: &Path, message: impl std::fmt::Display) -> PipelineError {
    PipelineError::Input {
        file: path.display().to_string(),
        message: message.to_string(),
    }
}

pub(super) fn read_sample(dir: &Path) -> Result<Pools, PipelineError> {
    let texts = dir.join("text").join("X_train_sample.csv");
    let labels_path = dir.join("text").join("Y_train_sample.csv");
    let foreign_path = dir
        .join("text")
        .join("extra")
        .join("shiyu_test_set_final_evaluation.csv");
    let image_dir = dir.join("images").join("image_train");
    let images = image_dir.is_dir().then_some(image_dir);
    let mut labels: HashMap<i64, CategoryCode> = HashMap::new();
    let mut reader =
        csv::Reader::from_path(&labels_path).map_err(|e| input_error(&labels_path, e))?;
    for record in reader.records() {
        let record = record.map_err(|e| input_error(&labels_path, e))?;
        let (Some(index), Some(code)) = (record.get(0), record.get(1)) else {
            continue;
        };
        if let (Ok(index), Ok(code)) = (index.trim().parse::<i64>(), CategoryCode::parse(code)) {
            labels.insert(index, code);
        }
    }
    let image_path = |image_id: i64, product_id: i64| {
        images
            .as_ref()
            .map(|dir| dir.join(format!("image_{image_id}_product_{product_id}.jpg")))
            .filter(|path| path.is_file())
    };
    let mut french = Vec::new();
    let mut reader = csv::Reader::from_path(&texts).map_err(|e| input_error(&texts, e))?;
    for record in reader.records() {
        let record = record.map_err(|e| input_error(&texts, e))?;
        let field = |i: usize| record.get(i).unwrap_or("").to_string();
        let (Ok(index), Ok(product_id), Ok(image_id)) = (
            field(0).trim().parse::<i64>(),
            field(3).trim().parse::<i64>(),
            field(4).trim().parse::<i64>(),
        ) else {
            continue;
        };
        let Some(category) = labels.get(&index).copied() else {
            continue;
        };
        french.push(SimProduct {
            index,
            product_id,
            image_id,
            designation: field(1),
            description: field(2),
            category,
            image: image_path(image_id, product_id),
        });
    }
    if french.len() < 100 {
        return Err(input_error(
            &texts,
            format!(
                "only {} labelled rows; the simulation needs more",
                french.len()
            ),
        ));
    }
    let french_products: HashSet<i64> = french.iter().map(|p| p.product_id).collect();
    let mut foreign = Vec::new();
    if foreign_path.is_file() {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b';')
            .flexible(true)
            .from_path(&foreign_path)
            .map_err(|e| input_error(&foreign_path, e))?;
        let mut seen = HashSet::new();
        for record in reader.records() {
            let record = record.map_err(|e| input_error(&foreign_path, e))?;
            let field = |i: usize| record.get(i).unwrap_or("").trim().to_string();
            let (Ok(index), Ok(category)) =
                (field(0).parse::<i64>(), CategoryCode::parse(&field(3)))
            else {
                continue;
            };
            let file = field(2);
            let Some((image_id, product_id)) = file
                .strip_prefix("image_")
                .and_then(|rest| rest.strip_suffix(".jpg"))
                .and_then(|rest| rest.split_once("_product_"))
                .and_then(|(i, p)| Some((i.parse::<i64>().ok()?, p.parse::<i64>().ok()?)))
            else {
                continue;
            };
            let text = field(1);
            if text.is_empty() || french_products.contains(&product_id) || !seen.insert(product_id)
            {
                continue;
            }
            foreign.push(SimProduct {
                index,
                product_id,
                image_id,
                designation: text,
                description: String::new(),
                category,
                image: image_path(image_id, product_id),
            });
        }
    }
    Ok(Pools {
        source: format!(
            "real sample at {} ({} labelled French rows, {} labelled English-translated rows)",
            dir.display(),
            french.len(),
            foreign.len()
        ),
        french,
        foreign,
        images,
    })
}

pub(super) fn demo_pools(seed: u64) -> Pools {
    let products = 3_000;
    let plan = prodcat_dataset::generate::category_plan(products, seed);
    let french = plan
        .iter()
        .enumerate()
        .map(|(index, category)| {
            let product = prodcat_dataset::generate::generate_product(index, *category, seed);
            SimProduct {
                index: index as i64,
                product_id: product.product_id,
                image_id: product.image_id,
                designation: product.designation,
                description: product.description,
                category: product.category,
                image: None,
            }
        })
        .collect();
    Pools {
        source: format!(
            "generated demo catalogue ({products} products, seed {seed}; no sample folder was \
             given and PRODCAT_SAMPLE_DATA is not set: set it for the real-data simulation)"
        ),
        french,
        foreign: Vec::new(),
        images: None,
    }
}

/// A degraded listing: the first words of the title, with typos, and no description.
pub(super) fn degrade(product: &SimProduct, rng: &mut SplitMix64) -> SimProduct {
    let words: Vec<&str> = product.designation.split_whitespace().take(4).collect();
    let letters: Vec<char> = "abcdefghijklmnopqrstuvwxyz".chars().collect();
    let mut degraded = Vec::new();
    for word in words {
        let mut chars: Vec<char> = word.to_lowercase().chars().collect();
        for c in chars.iter_mut() {
            if c.is_alphabetic() && rng.next_f64() < 0.25 {
                *c = letters[rng.next_below(letters.len() as u64) as usize];
            }
        }
        degraded.push(chars.into_iter().collect::<String>());
    }
    SimProduct {
        designation: degraded.join(" "),
        description: String::new(),
        ..product.clone()
    }
}

pub(super) fn write_initial_csv(
    dir: &Path,
    products: &[SimProduct],
) -> Result<(PathBuf, PathBuf), PipelineError> {
    std::fs::create_dir_all(dir).map_err(|e| input_error(dir, e))?;
    let texts = dir.join("X_initial.csv");
    let labels = dir.join("Y_initial.csv");
    let mut writer = csv::Writer::from_path(&texts).map_err(|e| input_error(&texts, e))?;
    writer
        .write_record(["", "designation", "description", "productid", "imageid"])
        .map_err(|e| input_error(&texts, e))?;
    let mut label_writer = csv::Writer::from_path(&labels).map_err(|e| input_error(&labels, e))?;
    label_writer
        .write_record(["", "prdtypecode"])
        .map_err(|e| input_error(&labels, e))?;
    for product in products {
        writer
            .write_record([
                product.index.to_string(),
                product.designation.clone(),
                product.description.clone(),
                product.product_id.to_string(),
                product.image_id.to_string(),
            ])
            .map_err(|e| input_error(&texts, e))?;
        label_writer
            .write_record([product.index.to_string(), product.category.to_string()])
            .map_err(|e| input_error(&labels, e))?;
    }
    writer.flush().map_err(|e| input_error(&texts, e))?;
    label_writer.flush().map_err(|e| input_error(&labels, e))?;
    Ok((texts, labels))
}

/// One served product of a week.
pub(super) struct Served {
    pub(super) product: SimProduct,
    pub(super) kind: ItemKind,
    pub(super) at_ms: i64,
    pub(super) image_hash: Option<String>,
    pub(super) image_bytes: Option<Vec<u8>>,
}

pub(super) fn image_of(path: &Option<PathBuf>) -> (Option<Vec<u8>>, Option<String>) {
    let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) else {
        return (None, None);
    };
    let hash = sha256_hex(&bytes);
    (Some(bytes), Some(hash))
}

/// Draws `count` products from `pool` (consumed from the front), keeping only those `keep` accepts.
pub(super) fn draw(
    pool: &mut Vec<SimProduct>,
    count: usize,
    keep: impl Fn(&SimProduct) -> bool,
) -> Vec<SimProduct> {
    let mut taken = Vec::new();
    let mut rest = Vec::with_capacity(pool.len());
    for product in pool.drain(..) {
        if taken.len() < count && keep(&product) {
            taken.push(product);
        } else {
            rest.push(product);
        }
    }
    *pool = rest;
    taken
}

impl Pools {
    /// Shuffles the pools and takes the initial training products from the French one.
    pub(super) fn take_initial(&mut self, share: f64, rng: &mut SplitMix64) -> Vec<SimProduct> {
        rng.shuffle(&mut self.french);
        rng.shuffle(&mut self.foreign);
        let count = ((self.french.len() as f64) * share).round() as usize;
        let count = count.clamp(30, self.french.len().saturating_sub(30).max(30));
        self.french.drain(..count.min(self.french.len())).collect()
    }
}

/// How the weeks' traffic is made.
pub(super) struct TrafficPlan {
    /// Categories of the drifted traffic.
    pub(super) focus: Vec<CategoryCode>,
    pub(super) per_week: usize,
    pub(super) total_weeks: usize,
    has_foreign: bool,
    foreign_share: f64,
}

/// One week's traffic.
pub(super) struct WeekTraffic {
    /// 0-based.
    pub(super) week: usize,
    pub(super) drift: f64,
    pub(super) start_ms: i64,
    pub(super) end_ms: i64,
    pub(super) items: Vec<Served>,
    pub(super) foreign_count: usize,
    pub(super) degraded_count: usize,
}

impl TrafficPlan {
    /// Chooses the focus categories of the drifted traffic (those with the most foreign
    /// listings, or without them held-out products; ties broken by the seed's order) and the
    /// weekly traffic that the held-out pools can supply without showing a product twice.
    pub(super) fn new(
        pools: &Pools,
        options: &SimulationOptions,
        rng: &mut SplitMix64,
    ) -> Result<Self, PipelineError> {
        let focus_source = if pools.foreign.is_empty() {
            &pools.french
        } else {
            &pools.foreign
        };
        let mut counts: BTreeMap<CategoryCode, usize> = BTreeMap::new();
        for product in focus_source {
            *counts.entry(product.category).or_default() += 1;
        }
        let ranked: Vec<(CategoryCode, usize)> = counts.into_iter().collect();
        let order: Vec<u64> = (0..ranked.len()).map(|_| rng.next_u64()).collect();
        let mut keyed: Vec<((usize, u64), CategoryCode)> = ranked
            .into_iter()
            .zip(order)
            .map(|((code, count), key)| ((usize::MAX - count, key), code))
            .collect();
        keyed.sort_by_key(|(key, _)| *key);
        let focus: Vec<CategoryCode> = keyed
            .into_iter()
            .take(FOCUS_CATEGORIES)
            .map(|(_, code)| code)
            .collect();
        let foreign_available = pools
            .foreign
            .iter()
            .filter(|p| focus.contains(&p.category))
            .count();
        let has_foreign = foreign_available > 0;
        let foreign_share = if has_foreign {
            FOREIGN_SHARE_OF_DRIFT
        } else {
            0.0
        };
        let total_weeks = options.weeks + options.recovery_weeks;
        let drift_total: f64 = (0..total_weeks).map(|w| options.drift_of_week(w)).sum();
        let french_per_item = total_weeks as f64 - drift_total * foreign_share;
        let mut per_week = options.traffic_per_week.max(10);
        if french_per_item > 0.0 {
            per_week = per_week.min((pools.french.len() as f64 / french_per_item).floor() as usize);
        }
        if has_foreign && drift_total > 0.0 {
            per_week = per_week
                .min((foreign_available as f64 / (drift_total * foreign_share)).floor() as usize);
        }
        if per_week < 10 {
            return Err(PipelineError::Invalid(format!(
                "the data holds too few held-out products for {total_weeks} weeks of traffic"
            )));
        }
        Ok(Self {
            focus,
            per_week,
            total_weeks,
            has_foreign,
            foreign_share,
        })
    }

    /// Draws week `week`'s traffic: clean French products, foreign listings of the focus
    /// categories and degraded French listings in the week's drift proportions, shuffled and
    /// spread over the week.
    pub(super) fn week(
        &self,
        week: usize,
        options: &SimulationOptions,
        pools: &mut Pools,
        rng: &mut SplitMix64,
    ) -> WeekTraffic {
        let drift = options.drift_of_week(week);
        let start_ms = options.start_ms + week as i64 * WEEK_MS;
        let drifted = (drift * self.per_week as f64).round() as usize;
        let foreign_count = (drifted as f64 * self.foreign_share).round() as usize;
        let degraded_count = drifted - foreign_count;
        let clean_count = self.per_week - drifted;
        let focus = &self.focus;
        let mut chosen: Vec<(SimProduct, ItemKind)> = Vec::new();
        chosen.extend(
            draw(&mut pools.french, clean_count, |_| true)
                .into_iter()
                .map(|p| (p, ItemKind::Clean)),
        );
        chosen.extend(
            draw(&mut pools.foreign, foreign_count, |p| {
                focus.contains(&p.category)
            })
            .into_iter()
            .map(|p| (p, ItemKind::Foreign)),
        );
        let degraded_pick = if self.has_foreign {
            draw(&mut pools.french, degraded_count, |_| true)
        } else {
            let mut picked = draw(&mut pools.french, degraded_count, |p| {
                focus.contains(&p.category)
            });
            if picked.len() < degraded_count {
                let missing = degraded_count - picked.len();
                picked.extend(draw(&mut pools.french, missing, |_| true));
            }
            picked
        };
        chosen.extend(
            degraded_pick
                .into_iter()
                .map(|p| (degrade(&p, rng), ItemKind::Degraded)),
        );
        rng.shuffle(&mut chosen);
        let count = chosen.len().max(1) as i64;
        let items = chosen
            .into_iter()
            .enumerate()
            .map(|(i, (product, kind))| {
                let (image_bytes, image_hash) = image_of(&product.image);
                Served {
                    at_ms: start_ms + (i as i64 * WEEK_MS) / count + 1,
                    product,
                    kind,
                    image_hash,
                    image_bytes,
                }
            })
            .collect();
        WeekTraffic {
            week,
            drift,
            start_ms,
            end_ms: start_ms + WEEK_MS,
            items,
            foreign_count,
            degraded_count,
        }
    }
}

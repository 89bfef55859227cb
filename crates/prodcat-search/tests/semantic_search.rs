//! Search by meaning, hybrid ranking, similar products and vector persistence through the
//! public API, with a small deterministic embedder (hashed character trigrams) so they run on
//! any machine. The tests with the real multilingual-e5-small are in `e5_model.rs`.

mod common;

use std::sync::Arc;

use common::{document, generated_documents, TrigramEmbedder};
use prodcat_domain::CategoryCode;
use prodcat_search::{
    BuildStage, CatalogueSearch, MatchKind, SearchDocument, SearchError, SearchMode, SearchOptions,
    SearchRequest, SentenceEmbedder, SimilarReason,
};

fn trigram_options() -> SearchOptions {
    SearchOptions {
        // Trigram vectors of related texts are far less close than e5's.
        minimum_meaning_similarity: 0.3,
        ..SearchOptions::default()
    }
}

fn open_with(options: SearchOptions, embedder: &Arc<TrigramEmbedder>) -> CatalogueSearch {
    let embedder: Arc<dyn SentenceEmbedder> = embedder.clone();
    CatalogueSearch::open(options, Some(embedder)).expect("open")
}

fn catalogue() -> Vec<SearchDocument> {
    vec![
        document(
            1,
            "Piscine tubulaire ronde",
            "Bassin hors sol pour le jardin.",
            2583,
        ),
        document(2, "Piscines autoportantes", "Grand bassin familial.", 2583),
        document(3, "Pompe de filtration", "Pour piscine hors sol.", 2583),
        document(4, "Perceuse visseuse sans fil", "Batterie 18V.", 2585),
        document(5, "Roman policier", "Une enquête haletante.", 2705),
        document(6, "Tondeuse thermique", "Pour le jardin.", 2585),
    ]
}

#[test]
fn hybrid_results_say_why_each_product_matched() {
    let embedder = TrigramEmbedder::new(256);
    let search = open_with(trigram_options(), &embedder);
    let summary = search.build(catalogue(), &|_| {}).unwrap();
    assert_eq!(summary.vectors_embedded, 6);
    let response = search.search(&SearchRequest::new("piscine")).unwrap();
    assert_eq!(response.mode, SearchMode::Hybrid);
    assert_eq!(response.keyword_matches, 3);
    let kinds: Vec<(i64, MatchKind)> = response
        .hits
        .iter()
        .map(|hit| (hit.product_id, hit.matched_by))
        .collect();
    // The three pool products contain the word (2 as a plural, within one edit) and share
    // trigrams with it: both lists, before anything found by meaning only.
    let mut first_three = kinds[..3].to_vec();
    first_three.sort_by_key(|(id, _)| *id);
    assert_eq!(
        first_three,
        vec![
            (1, MatchKind::Both),
            (2, MatchKind::Both),
            (3, MatchKind::Both)
        ],
        "{kinds:?}"
    );
    // Exact word in the title ranks first by keyword.
    let one = response
        .hits
        .iter()
        .find(|hit| hit.product_id == 1)
        .unwrap();
    assert_eq!(one.keyword.unwrap().rank, 1);
    // Every hit carries the scores of the lists it is in, and the fused score is RRF(60).
    for hit in &response.hits {
        let expected: f32 = [hit.keyword, hit.meaning]
            .iter()
            .flatten()
            .map(|ranked| 1.0 / (60.0 + ranked.rank as f32))
            .sum();
        assert!((hit.score - expected).abs() < 1e-6);
        match hit.matched_by {
            MatchKind::Both => assert!(hit.keyword.is_some() && hit.meaning.is_some()),
            MatchKind::Keyword => assert!(hit.keyword.is_some() && hit.meaning.is_none()),
            MatchKind::Meaning => {
                assert!(hit.keyword.is_none());
                assert!(hit.meaning.unwrap().score >= 0.3);
            }
        }
    }
    for pair in response.hits.windows(2) {
        assert!(pair[0].score >= pair[1].score);
    }
    // The total counts products matching either way, each once.
    let union: std::collections::HashSet<i64> =
        response.hits.iter().map(|h| h.product_id).collect();
    assert_eq!(response.total, union.len());

    // Meaning only: ranked by cosine, pool products first.
    let meaning = search
        .search(&SearchRequest::new("piscine").with_mode(SearchMode::Meaning))
        .unwrap();
    assert!([1, 2, 3].contains(&meaning.hits[0].product_id));
    for pair in meaning.hits.windows(2) {
        assert!(pair[0].score >= pair[1].score);
    }
    assert!(meaning
        .hits
        .iter()
        .all(|hit| hit.matched_by == MatchKind::Meaning));
    assert_eq!(meaning.total, meaning.meaning_matches);
    // Category filter applies to meaning too.
    let tools = search
        .search(
            &SearchRequest::new("piscine jardin")
                .with_mode(SearchMode::Meaning)
                .with_category(CategoryCode::from_u16(2585).unwrap()),
        )
        .unwrap();
    assert!(tools
        .hits
        .iter()
        .all(|hit| hit.category == CategoryCode::from_u16(2585).ok()));
}

#[test]
fn nearest_products_by_meaning_when_no_word_matches() {
    let embedder = TrigramEmbedder::new(256);
    let search = open_with(trigram_options(), &embedder);
    search.build(catalogue(), &|_| {}).unwrap();
    // No product has "piscinette" (three edits from anything), but trigrams are shared.
    let response = search
        .search(&SearchRequest::new("piscinettes").with_mode(SearchMode::Keyword))
        .unwrap();
    assert_eq!(response.total, 0);
    assert!(!response.nearest_by_meaning.is_empty());
    assert!([1, 2, 3].contains(&response.nearest_by_meaning[0].product_id));
    assert!(response
        .nearest_by_meaning
        .iter()
        .all(|hit| hit.matched_by == MatchKind::Meaning));
    // When hybrid finds products by meaning, they are the hits (no separate suggestions).
    let hybrid = search.search(&SearchRequest::new("piscinettes")).unwrap();
    assert!(!hybrid.hits.is_empty());
    assert!(hybrid
        .hits
        .iter()
        .all(|hit| hit.matched_by == MatchKind::Meaning));
    assert!(hybrid.nearest_by_meaning.is_empty());
}

#[test]
fn vectors_persist_across_restarts_keyed_by_text() {
    let directory = tempfile::tempdir().unwrap();
    let options = SearchOptions {
        embedding_cache_directory: Some(directory.path().to_path_buf()),
        embedding_batch_size: 16,
        ..trigram_options()
    };
    let documents = generated_documents(120, 5);
    let first_results;
    {
        let embedder = TrigramEmbedder::new(128);
        let search = open_with(options.clone(), &embedder);
        let stages = std::sync::Mutex::new(Vec::new());
        let summary = search
            .build(documents.clone(), &|progress| {
                stages.lock().unwrap().push(progress)
            })
            .unwrap();
        assert_eq!(summary.vectors_embedded, 120);
        assert_eq!(summary.vectors_from_cache, 0);
        assert_eq!(embedder.embedded(), 120);
        let stages = stages.into_inner().unwrap();
        let embedding: Vec<_> = stages
            .iter()
            .filter(|p| p.stage == BuildStage::Embedding)
            .collect();
        assert_eq!(embedding.len(), 8, "batches of 16");
        assert_eq!(embedding.last().unwrap().done, 120);
        first_results = search
            .search(&SearchRequest::new("piscine jardin").with_mode(SearchMode::Meaning))
            .unwrap();
        assert!(!first_results.hits.is_empty());
    }
    // A restart: nothing is embedded again, results are the same.
    let embedder = TrigramEmbedder::new(128);
    let search = open_with(options.clone(), &embedder);
    let summary = search.build(documents.clone(), &|_| {}).unwrap();
    assert_eq!(summary.vectors_from_cache, 120);
    assert_eq!(summary.vectors_embedded, 0);
    assert_eq!(embedder.embedded(), 0);
    let again = search
        .search(&SearchRequest::new("piscine jardin").with_mode(SearchMode::Meaning))
        .unwrap();
    assert_eq!(again.hits, first_results.hits);
    // A changed title is embedded, an unchanged one is not; popularity changes embed nothing.
    let mut changed = documents[0].clone();
    changed.designation = "Trottinette électrique pliable".to_string();
    let mut same_text = documents[1].clone();
    same_text.popularity = 12345.0;
    search.upsert_many(vec![changed, same_text]).unwrap();
    assert_eq!(embedder.embedded(), 1);
    // Another model never reads these vectors.
    let other = TrigramEmbedder::new(64);
    let search = open_with(options, &other);
    let summary = search.build(documents, &|_| {}).unwrap();
    assert_eq!(summary.vectors_from_cache, 0);
    assert_eq!(summary.vectors_embedded, 120);
}

fn image(direction: usize, noise: f32) -> Option<Vec<f32>> {
    let mut features = vec![0.05f32; 32];
    features[direction] = 1.0;
    features[(direction + 1) % 32] += noise;
    Some(features)
}

#[test]
fn similar_products_by_image_then_popular_ones() {
    let search = CatalogueSearch::open(SearchOptions::default(), None).unwrap();
    let mut documents = Vec::new();
    let mut add = |id: i64, category: u16, features: Option<Vec<f32>>, popularity: f64| {
        let mut product = document(id, &format!("Produit {id}"), "", category);
        product.image_features = features;
        product.popularity = popularity;
        documents.push(product);
    };
    // Three near-identical pictures, one different picture in the same category.
    add(1, 2583, image(0, 0.0), 5.0);
    add(2, 2583, image(0, 0.1), 1.0);
    add(3, 2583, image(0, 0.2), 2.0);
    add(4, 2583, image(9, 0.0), 50.0);
    add(5, 2583, None, 40.0);
    add(6, 2585, image(20, 0.0), 100.0);
    add(7, 2585, None, 70.0);
    search.build(documents, &|_| {}).unwrap();

    let similar = search.similar(1, 5).unwrap();
    let rules: Vec<(i64, SimilarReason)> = similar
        .iter()
        .map(|item| (item.product_id, item.reason))
        .collect();
    assert_eq!(
        rules,
        vec![
            (2, SimilarReason::Similar),
            (3, SimilarReason::Similar),
            (4, SimilarReason::PopularInCategory),
            (5, SimilarReason::PopularInCategory),
            (6, SimilarReason::PopularOverall),
        ]
    );
    assert!(similar[0].similarity.unwrap() > similar[1].similarity.unwrap());
    assert!(similar[0].image_similarity.unwrap() > 0.95);
    assert!(similar[0].text_similarity.is_none());
    // The different picture has an image similarity, below the threshold.
    assert!(similar[2].similarity.unwrap() < search.options().similarity.minimum_similarity);
    assert!(similar[3].similarity.is_none());

    // Nothing similar: popular products of the category, then overall, never itself.
    let lonely = search.similar(7, 3).unwrap();
    let rules: Vec<(i64, SimilarReason)> = lonely
        .iter()
        .map(|item| (item.product_id, item.reason))
        .collect();
    assert_eq!(
        rules,
        vec![
            (6, SimilarReason::PopularInCategory),
            (4, SimilarReason::PopularOverall),
            (5, SimilarReason::PopularOverall),
        ]
    );
    // Popularity updates change the fallback order at once.
    search.set_popularity(5, 1000.0).unwrap();
    assert_eq!(search.similar(7, 2).unwrap()[1].product_id, 5);
    assert!(matches!(
        search.similar(999, 3),
        Err(SearchError::UnknownProduct(999))
    ));
    assert!(matches!(
        search.similar(1, 0),
        Err(SearchError::InvalidRequest(_))
    ));
    // A deleted product is neither similar nor popular any more.
    search.delete(2).unwrap();
    assert!(search
        .similar(1, 10)
        .unwrap()
        .iter()
        .all(|item| item.product_id != 2));
    assert_eq!(search.similar(1, 10).unwrap().len(), 5);
}

#[test]
fn similar_products_combine_text_and_image() {
    let embedder = TrigramEmbedder::new(256);
    let search = open_with(
        SearchOptions {
            similarity: prodcat_search::SimilarityOptions {
                text_floor: 0.0,
                image_floor: 0.0,
                minimum_similarity: 0.5,
                ..Default::default()
            },
            ..trigram_options()
        },
        &embedder,
    );
    let mut documents = catalogue();
    documents[0].image_features = image(0, 0.0);
    documents[1].image_features = image(0, 0.1);
    documents[2].image_features = image(5, 0.0);
    search.build(documents, &|_| {}).unwrap();
    let similar = search.similar(1, 5).unwrap();
    let position = |id: i64| {
        similar
            .iter()
            .position(|item| item.product_id == id)
            .unwrap()
    };
    // Same picture and close text beats a different picture with close text.
    assert!(position(2) < position(3), "{similar:?}");
    let first = &similar[position(2)];
    assert_eq!(first.reason, SimilarReason::Similar);
    let (text, image) = (
        first.text_similarity.unwrap(),
        first.image_similarity.unwrap(),
    );
    let expected = 0.6 * text + 0.4 * image;
    assert!((first.similarity.unwrap() - expected).abs() < 1e-5);
    // Product 4 (a drill) has no picture: text similarity alone, and far below.
    if let Some(drill) = similar.iter().find(|item| item.product_id == 4) {
        assert!(drill.image_similarity.is_none());
        assert!(drill.similarity.unwrap() < first.similarity.unwrap());
    }
}

#[test]
fn meaning_search_sees_updates_and_deletes() {
    let embedder = TrigramEmbedder::new(256);
    let search = open_with(trigram_options(), &embedder);
    search.build(catalogue(), &|_| {}).unwrap();
    let meaning = |query: &str| {
        search
            .search(&SearchRequest::new(query).with_mode(SearchMode::Meaning))
            .unwrap()
            .hits
            .iter()
            .map(|hit| hit.product_id)
            .collect::<Vec<_>>()
    };
    search
        .upsert(document(40, "Trampoline de jardin", "Avec filet.", 1302))
        .unwrap();
    assert_eq!(meaning("trampoline")[0], 40);
    search.delete(40).unwrap();
    assert!(!meaning("trampoline").contains(&40));
    assert_eq!(search.status().text_vectors, 6);
}

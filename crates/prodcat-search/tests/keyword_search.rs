//! Keyword search through the public API: accent and case folding, typo tolerance, exact matches
//! first, BM25 ranking, category filter, pagination, spelling suggestions, and updates and
//! deletes visible to the next search. No model files needed.

mod common;

use std::sync::Arc;

use common::{document, generated_documents};
use prodcat_domain::CategoryCode;
use prodcat_search::{
    CatalogueSearch, MatchKind, SearchError, SearchMode, SearchOptions, SearchRequest,
    SearchResponse,
};

fn keyword_index(documents: Vec<prodcat_search::SearchDocument>) -> CatalogueSearch {
    let search = CatalogueSearch::open(SearchOptions::default(), None).expect("open");
    let summary = search.build(documents, &|_| {}).expect("build");
    assert!(summary.rejected.is_empty(), "{:?}", summary.rejected);
    search
}

fn keyword(search: &CatalogueSearch, query: &str) -> SearchResponse {
    search
        .search(&SearchRequest::new(query).with_mode(SearchMode::Keyword))
        .expect("search")
}

fn ids(response: &SearchResponse) -> Vec<i64> {
    response.hits.iter().map(|hit| hit.product_id).collect()
}

fn small_catalogue() -> Vec<prodcat_search::SearchDocument> {
    vec![
        document(1, "Robe d'été légère en coton", "Parfaite pour les beaux jours.", 1301),
        document(2, "Piscine tubulaire ronde Intex 366x76", "Piscine hors sol avec pompe de filtration.", 2583),
        document(3, "Pompe de filtration à cartouche", "Compatible avec toutes les piscines hors sol.", 2583),
        document(4, "Chaise scandinave en chêne", "Structure en bois massif.", 1560),
        document(5, "Lot de 4 chaises de jardin", "Chaises empilables pour l'extérieur.", 2582),
        document(6, "Lampe de chevet", "Une petite lampe en céramique.", 2060),
        document(7, "Coussin décoratif", "Housse en lin avec motif de lampe ancienne, idéale pour le salon, la chambre, le bureau ou la véranda, lavable en machine à 30 degrés.", 1920),
        document(8, "Trampoline de jardin 305 cm", "Filet de sécurité inclus.", 1302),
        document(9, "Lampe de bureau LED", "Bras articulé, lumière pour le bureau.", 2060),
    ]
}

#[test]
fn accents_and_case_do_not_matter() {
    let search = keyword_index(small_catalogue());
    for query in ["été", "ETE", "eté", "Été", "ete"] {
        assert_eq!(ids(&keyword(&search, query)), vec![1], "query {query:?}");
    }
    assert_eq!(ids(&keyword(&search, "CHÊNE")), vec![4]);
    assert_eq!(ids(&keyword(&search, "chene")), vec![4]);
}

#[test]
fn typos_are_tolerated_by_word_length() {
    let search = keyword_index(small_catalogue());
    // One edit for words of 4 to 7 characters (a transposition counts as one).
    assert!(ids(&keyword(&search, "pisicne")).contains(&2));
    assert!(ids(&keyword(&search, "lampr")).contains(&6));
    // Two edits from 8 characters.
    assert_eq!(ids(&keyword(&search, "trampolinne")), vec![8]);
    assert_eq!(ids(&keyword(&search, "tranpolinne")), vec![8]);
    // Not three.
    assert!(keyword(&search, "trenpolinnne").hits.is_empty());
    // Not for short words: "lot" must not match "lit" or "lin".
    let lot = keyword(&search, "lit");
    assert!(lot.hits.is_empty(), "{:?}", ids(&lot));
}

#[test]
fn exact_matches_rank_before_typo_variants() {
    let mut documents: Vec<_> = (0..30)
        .map(|i| {
            document(
                100 + i,
                &format!("Chaise modèle {i}"),
                "Assise confortable.",
                1560,
            )
        })
        .collect();
    // A rare misspelling in the catalogue must not outrank the correct word.
    documents.push(document(1, "Chaisse pliante", "", 1560));
    documents.push(document(2, "Chaises pliantes", "", 1560));
    let search = keyword_index(documents);
    let response = search
        .search(
            &SearchRequest::new("chaise")
                .with_mode(SearchMode::Keyword)
                .with_page(0, 50),
        )
        .unwrap();
    assert_eq!(response.total, 32);
    let order = ids(&response);
    let position = |id: i64| order.iter().position(|other| *other == id).unwrap();
    assert!(position(1) >= 30 && position(2) >= 30, "{order:?}");
    // A query misspelt in the same way finds the correct word too.
    let misspelt = keyword(&search, "chaisse");
    assert_eq!(misspelt.hits[0].product_id, 1);
    assert_eq!(misspelt.total, 32);
}

#[test]
fn bm25_prefers_title_matches_and_rare_words() {
    let search = keyword_index(small_catalogue());
    let response = keyword(&search, "lampe");
    assert_eq!(response.total, 3);
    // 6 and 9 have it in the title; 7 only in a long description.
    assert_eq!(*ids(&response).last().unwrap(), 7);
    assert!(response.hits[0].score > response.hits[2].score);
    // Ranks are given and every hit says it matched by keyword.
    for (index, hit) in response.hits.iter().enumerate() {
        assert_eq!(hit.matched_by, MatchKind::Keyword);
        assert_eq!(hit.keyword.unwrap().rank, index + 1);
        assert!(hit.meaning.is_none());
    }
    // Both words are required; the stop word "de" is not.
    assert_eq!(ids(&keyword(&search, "lampe bureau")), vec![9, 7]);
    assert_eq!(ids(&keyword(&search, "lampe de bureau"))[0], 9);
    // "de" alone still finds products (a query of only stop words requires them).
    assert!(keyword(&search, "de").total >= 3);
}

#[test]
fn the_category_filter_keeps_only_that_category() {
    let search = keyword_index(small_catalogue());
    let all = keyword(&search, "chaise");
    assert_eq!(all.total, 2);
    let garden = search
        .search(
            &SearchRequest::new("chaise")
                .with_mode(SearchMode::Keyword)
                .with_category(CategoryCode::from_u16(2582).unwrap()),
        )
        .unwrap();
    assert_eq!(ids(&garden), vec![5]);
    assert_eq!(garden.total, 1);
    assert_eq!(garden.hits[0].category, CategoryCode::from_u16(2582).ok());
}

#[test]
fn pages_split_the_ranking_without_overlap() {
    let search = keyword_index(generated_documents(600, 7));
    let full = search
        .search(
            &SearchRequest::new("livraison")
                .with_mode(SearchMode::Keyword)
                .with_page(0, 50),
        )
        .unwrap();
    assert!(full.total >= 50, "total {}", full.total);
    let mut paged = Vec::new();
    for page in 0..5 {
        let response = search
            .search(
                &SearchRequest::new("livraison")
                    .with_mode(SearchMode::Keyword)
                    .with_page(page * 10, 10),
            )
            .unwrap();
        assert_eq!(response.total, full.total);
        assert_eq!(response.hits[0].keyword.unwrap().rank, page * 10 + 1);
        paged.extend(ids(&response));
    }
    assert_eq!(paged, ids(&full));
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let search = keyword_index(small_catalogue());
    let check = |request: SearchRequest, needle: &str| match search.search(&request) {
        Err(SearchError::InvalidRequest(message)) => assert!(message.contains(needle), "{message}"),
        other => panic!("expected an invalid request, got {other:?}"),
    };
    check(SearchRequest::new("   "), "empty");
    check(SearchRequest::new("<p></p>"), "empty");
    check(SearchRequest::new("lampe").with_page(0, 0), "limit");
    check(SearchRequest::new("lampe").with_page(0, 10_000), "limit");
    check(
        SearchRequest::new("lampe").with_page(1_000_000, 10),
        "offset",
    );
    check(SearchRequest::new("x".repeat(100_000)), "bytes");
    // Meaning search without an embedder says so; hybrid quietly becomes keyword.
    assert!(matches!(
        search.search(&SearchRequest::new("lampe").with_mode(SearchMode::Meaning)),
        Err(SearchError::SemanticUnavailable)
    ));
    let hybrid = search.search(&SearchRequest::new("lampe")).unwrap();
    assert_eq!(hybrid.mode, SearchMode::Keyword);
    assert!(hybrid.nearest_by_meaning.is_empty());
}

#[test]
fn misspelt_queries_get_did_you_mean_suggestions() {
    let search = keyword_index(generated_documents(800, 11));
    // A short word has no typo tolerance in search, but gets suggestions: title words one edit
    // away, the most frequent first ("lot", as in "lot de 2", before "lit").
    let response = keyword(&search, "lut");
    assert_eq!(response.keyword_matches, 0);
    let queries: Vec<&str> = response
        .did_you_mean
        .iter()
        .map(|s| s.query.as_str())
        .collect();
    assert_eq!(&queries[..2], &["lot", "lit"], "{queries:?}");
    assert!(response.did_you_mean[0].keyword_matches > response.did_you_mean[1].keyword_matches);
    let first = &response.did_you_mean[0];
    assert_eq!(first.corrections[0].from, "lut");
    assert_eq!(first.corrections[0].edits, 1);
    assert!(first.keyword_matches > 0);

    // Misspelt words with a word no title has: nothing matches; the suggestion corrects the
    // misspellings (accents as titles write them) and leaves the unknown word out.
    let response = keyword(&search, "commod chne xyzzyq");
    assert_eq!(response.total, 0);
    let suggestion = response.did_you_mean.first().expect("a suggestion");
    assert_eq!(suggestion.query, "commode chêne", "{suggestion:?}");
    assert_eq!(suggestion.dropped, vec!["xyzzyq".to_string()]);
    let corrected: Vec<&str> = suggestion
        .corrections
        .iter()
        .map(|c| c.to.as_str())
        .collect();
    assert_eq!(corrected, vec!["commode", "chêne"]);
    assert!(suggestion.keyword_matches > 0);
    assert_eq!(
        suggestion.keyword_matches,
        keyword(&search, &suggestion.query).total
    );

    // A well-spelt query that matches gets none.
    let fine = keyword(&search, "piscine");
    assert!(fine.total >= 3);
    assert!(fine.did_you_mean.is_empty());
    // Nor does a query too far from every title word.
    assert!(keyword(&search, "zzzzqqqq").did_you_mean.is_empty());
}

#[test]
fn updates_and_deletes_are_visible_to_the_next_search() {
    let search = keyword_index(small_catalogue());
    assert!(keyword(&search, "hamac").hits.is_empty());
    search
        .upsert(document(20, "Hamac de jardin en toile", "", 2582))
        .unwrap();
    assert_eq!(ids(&keyword(&search, "hamac")), vec![20]);
    // Editing the title: the old word no longer finds it, the new one does.
    search
        .upsert(document(20, "Balancelle de jardin", "", 2582))
        .unwrap();
    assert!(keyword(&search, "hamac").hits.is_empty());
    assert_eq!(ids(&keyword(&search, "balancelle")), vec![20]);
    assert_eq!(search.len(), 10);
    // Changing the category moves it between filters.
    search
        .upsert(document(20, "Balancelle de jardin", "", 1302))
        .unwrap();
    let filtered = search
        .search(
            &SearchRequest::new("balancelle")
                .with_mode(SearchMode::Keyword)
                .with_category(CategoryCode::from_u16(2582).unwrap()),
        )
        .unwrap();
    assert!(filtered.hits.is_empty());
    // Deleting.
    assert!(search.delete(20).unwrap());
    assert!(!search.delete(20).unwrap());
    assert!(keyword(&search, "balancelle").hits.is_empty());
    assert!(!search.contains(20));
    assert_eq!(search.status().keyword_documents, 9);
    // The vocabulary forgets deleted titles: no suggestion towards a word no product has.
    let response = keyword(&search, "balancele");
    assert!(
        response.did_you_mean.is_empty(),
        "{:?}",
        response.did_you_mean
    );
}

#[test]
fn a_rebuild_replaces_everything() {
    let search = keyword_index(small_catalogue());
    search
        .build(vec![document(50, "Perceuse sans fil", "", 2585)], &|_| {})
        .unwrap();
    assert!(keyword(&search, "lampe").hits.is_empty());
    assert_eq!(ids(&keyword(&search, "perceuse")), vec![50]);
    assert_eq!(search.len(), 1);
}

#[test]
fn invalid_documents_are_reported_not_indexed() {
    let search = CatalogueSearch::open(SearchOptions::default(), None).unwrap();
    let mut bad_popularity = document(2, "Lampe", "", 2060);
    bad_popularity.popularity = f64::NAN;
    let mut bad_features = document(3, "Lampe", "", 2060);
    bad_features.image_features = Some(vec![1.0, f32::INFINITY]);
    let mut first_image = document(4, "Lampe", "", 2060);
    first_image.image_features = Some(vec![1.0, 0.0, 0.0]);
    let mut other_length = document(5, "Lampe", "", 2060);
    other_length.image_features = Some(vec![1.0, 0.0]);
    let summary = search
        .build(
            vec![
                document(1, "Lampe", "", 2060),
                bad_popularity,
                bad_features,
                first_image,
                other_length,
                document(1, "Doublon", "", 2060),
            ],
            &|_| {},
        )
        .unwrap();
    let rejected: Vec<i64> = summary.rejected.iter().map(|(id, _)| *id).collect();
    assert_eq!(rejected, vec![2, 3, 5, 1]);
    assert_eq!(summary.documents, 2);
    assert_eq!(summary.image_vectors, 1);
    // The same rules on upsert, as an error naming the product.
    let mut wrong = document(9, "Lampe", "", 2060);
    wrong.image_features = Some(vec![0.5; 7]);
    match search.upsert(wrong) {
        Err(SearchError::InvalidDocument {
            product_id: 9,
            reason,
        }) => {
            assert!(reason.contains("7 values"), "{reason}")
        }
        other => panic!("expected an invalid document error, got {other:?}"),
    }
    assert!(matches!(
        search.set_popularity(77, 1.0),
        Err(SearchError::UnknownProduct(77))
    ));
}

#[test]
fn searches_run_while_products_are_written() {
    let search = Arc::new(keyword_index(generated_documents(300, 3)));
    let writer = {
        let search = Arc::clone(&search);
        std::thread::spawn(move || {
            for index in 0..40i64 {
                search
                    .upsert(document(
                        9_000 + index,
                        &format!("Gyropode électrique modèle {index}"),
                        "",
                        1302,
                    ))
                    .unwrap();
                if index % 3 == 0 {
                    search.delete(9_000 + index).unwrap();
                }
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let search = Arc::clone(&search);
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..60 {
                    let response = keyword(&search, "gyropode");
                    assert!(response
                        .hits
                        .iter()
                        .all(|hit| hit.designation.contains("Gyropode")));
                    last = response.total;
                }
                last
            })
        })
        .collect();
    writer.join().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    // 40 written, 14 deleted.
    assert_eq!(keyword(&search, "gyropode").total, 26);
}

#[test]
fn the_keyword_index_can_live_in_a_directory() {
    let directory = tempfile::tempdir().unwrap();
    let options = SearchOptions {
        keyword_index_directory: Some(directory.path().join("keywords")),
        ..SearchOptions::default()
    };
    {
        let search = CatalogueSearch::open(options.clone(), None).unwrap();
        search.build(small_catalogue(), &|_| {}).unwrap();
        assert_eq!(ids(&keyword(&search, "ete")), vec![1]);
        search
            .upsert(document(30, "Parasol déporté", "", 2582))
            .unwrap();
        assert_eq!(ids(&keyword(&search, "parasol")), vec![30]);
    }
    assert!(
        std::fs::read_dir(directory.path().join("keywords"))
            .unwrap()
            .count()
            > 1
    );
    // Reopened (after the first instance released its writer lock) and rebuilt.
    let search = CatalogueSearch::open(options, None).unwrap();
    search.build(small_catalogue(), &|_| {}).unwrap();
    assert_eq!(search.status().keyword_documents, 9);
    assert!(keyword(&search, "parasol").hits.is_empty());
}

#[test]
fn real_sample_keyword_search() -> anyhow::Result<()> {
    let Some(directory) = common::sample_directory("real_sample_keyword_search") else {
        return Ok(());
    };
    let documents = common::sample_documents(&directory)?;
    let count = documents.len();
    let search = keyword_index(documents);
    assert_eq!(search.len(), count);
    // Pools (2583): most top hits of "piscine" and of a misspelling of it are pool products.
    let pool = CategoryCode::from_u16(2583)?;
    for query in ["piscine", "PISCINE", "piscnie"] {
        let response = keyword(&search, query);
        assert!(response.total >= 20, "{query}: {}", response.total);
        let pools = response
            .hits
            .iter()
            .filter(|hit| hit.category == Some(pool))
            .count();
        assert!(
            pools >= 15,
            "{query}: {pools} of 20 top hits are pool products"
        );
    }
    Ok(())
}

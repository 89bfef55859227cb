//! Registry tests, on every available SQL backend: registration, references, alias history,
//! rollback, and promotion under the policy (margin, per-class bound, evaluation sets, force).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use prodcat_domain::{DatasetVersionId, ModelVersionId};
use prodcat_registry::{
    alias_history, archive_version, force_promote, get_run, list_aliases, list_versions, promote,
    promote_scored, register_version, remove_alias, resolve, rollback, set_alias, start_run,
    AliasAction, AliasMove, EvaluationSummary, ModelVersion, ModelVersionStatus, NewModelVersion,
    NewRun, PromotionOutcome, PromotionPolicy, PromotionRequest, RegistryError, RescoreError,
    Rescorer, RunKind, ScoreFuture, CHALLENGER, CHAMPION,
};
use prodcat_storage::{testing, Database};

fn version_id(hex: &str) -> ModelVersionId {
    ModelVersionId::parse(&format!("mv-{hex}")).unwrap()
}

fn new_version(hex: &str) -> NewModelVersion {
    NewModelVersion {
        id: version_id(hex),
        run_id: None,
        dataset_version: Some(DatasetVersionId::parse("ds-0123456789abcdef").unwrap()),
        manifest_json: format!(r#"{{"formatVersion":1,"id":"mv-{hex}","files":{{}}}}"#),
        object_prefix: format!("models/mv-{hex}"),
        summary_metrics: BTreeMap::from([("weighted_f1".to_string(), 0.8)]),
        created_by: "trainer".to_string(),
        note: String::new(),
    }
}

/// Registers versions in order, a few milliseconds apart so `latest` is well defined.
async fn register_all(database: &Database, hexes: &[&str]) -> Vec<ModelVersion> {
    let mut versions = Vec::new();
    for hex in hexes {
        let (version, created) = register_version(database, &new_version(hex)).await.unwrap();
        assert!(created);
        versions.push(version);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    versions
}

fn move_to(alias: &str, hex: &str, actor: &str, reason: &str) -> AliasMove {
    AliasMove {
        alias: alias.to_string(),
        version: version_id(hex),
        actor: actor.to_string(),
        reason: reason.to_string(),
        forced: false,
        decision: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_registered_and_resolved() {
    for test_database in testing::databases().await {
        let backend = test_database.name();
        let database = &test_database.database;
        let unknown_latest = resolve(database, "latest").await.unwrap_err();
        assert!(
            unknown_latest.to_string().contains("latest"),
            "{unknown_latest}"
        );

        let run = NewRun::new(RunKind::Train, "train", "trainer");
        let run = start_run(database, &run).await.unwrap();
        let mut first = new_version("abcd000000000001");
        first.run_id = Some(run.id.clone());
        let (version, created) = register_version(database, &first).await.unwrap();
        assert!(created, "{backend}");
        assert_eq!(version.status, ModelVersionStatus::Ready);
        assert_eq!(version.manifest["formatVersion"], 1);
        assert_eq!(version.summary_metrics["weighted_f1"], 0.8);
        // The producing run now names its model version.
        let details = get_run(database, run.id.as_str()).await.unwrap();
        assert_eq!(details.run.model_version.as_ref(), Some(&version.id));
        // The same bundle again (a bit-identical retraining) is not a new version...
        let (again, created) = register_version(database, &first).await.unwrap();
        assert!(!created);
        assert_eq!(again.id, version.id);
        // ...but the same id with another manifest is refused.
        let mut different = first.clone();
        different.manifest_json = r#"{"formatVersion":2}"#.to_string();
        assert!(matches!(
            register_version(database, &different).await,
            Err(RegistryError::VersionConflict { .. })
        ));
        let mut not_json = new_version("abcd000000000009");
        not_json.manifest_json = "not json".to_string();
        assert!(matches!(
            register_version(database, &not_json).await,
            Err(RegistryError::InvalidManifest { .. })
        ));
        let mut array = new_version("abcd000000000009");
        array.manifest_json = "[1, 2]".to_string();
        assert!(register_version(database, &array).await.is_err());

        tokio::time::sleep(Duration::from_millis(3)).await;
        register_all(database, &["abcd000000000002", "ef01000000000003"]).await;
        assert_eq!(list_versions(database).await.unwrap().len(), 3);
        assert_eq!(
            list_versions(database).await.unwrap()[0].id,
            version_id("ef01000000000003"),
            "newest first"
        );

        // References: full id, unique prefix, ambiguous prefix, latest, alias, unknown.
        let check = |reference: &'static str, expected: &'static str| async move {
            let found = resolve(database, reference).await;
            match found {
                Ok(version) => assert_eq!(version.id.as_str(), expected, "{reference}"),
                Err(error) => panic!("{reference}: {error}"),
            }
        };
        check("mv-abcd000000000002", "mv-abcd000000000002").await;
        check("mv-ef01", "mv-ef01000000000003").await;
        check("latest", "mv-ef01000000000003").await;
        let ambiguous = resolve(database, "mv-abcd").await.unwrap_err();
        assert!(
            matches!(
                ambiguous,
                RegistryError::AmbiguousModelReference { matches: 2, .. }
            ),
            "{ambiguous}"
        );
        set_alias(
            database,
            &move_to(CHAMPION, "abcd000000000002", "alice", "first"),
        )
        .await
        .unwrap();
        check("champion", "mv-abcd000000000002").await;
        for unknown in [
            "challenger",
            "mv-9999",
            "Champion!",
            "",
            "mv-ffff000000000000",
        ] {
            let error = resolve(database, unknown).await.unwrap_err();
            assert!(
                matches!(error, RegistryError::UnknownModelReference { .. }),
                "{unknown}: {error}"
            );
            assert!(
                error.to_string().contains(&format!("{unknown:?}")),
                "{error}"
            );
        }
        let hint = resolve(database, "nope").await.unwrap_err().to_string();
        assert!(
            hint.contains("champion"),
            "the error lists the aliases: {hint}"
        );
        let listed = list_versions(database).await.unwrap();
        let champion = listed
            .iter()
            .find(|version| version.id == version_id("abcd000000000002"))
            .unwrap();
        assert_eq!(champion.aliases, vec!["champion".to_string()]);

        // Archiving: refused while aliased; an archived version takes no alias and is not latest.
        assert!(matches!(
            archive_version(database, &version_id("abcd000000000002")).await,
            Err(RegistryError::VersionInUse { .. })
        ));
        let archived = archive_version(database, &version_id("ef01000000000003"))
            .await
            .unwrap();
        assert_eq!(archived.status, ModelVersionStatus::Archived);
        check("latest", "mv-abcd000000000002").await;
        assert!(matches!(
            set_alias(
                database,
                &move_to("shadow", "ef01000000000003", "alice", "try")
            )
            .await,
            Err(RegistryError::VersionArchived { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_moves_are_recorded_and_rolled_back() {
    for test_database in testing::databases().await {
        let backend = test_database.name();
        let database = &test_database.database;
        register_all(
            database,
            &["1000000000000001", "2000000000000002", "3000000000000003"],
        )
        .await;
        let no_history = rollback(database, CHAMPION, "ops", "nothing yet").await;
        assert!(
            matches!(no_history, Err(RegistryError::NothingToRollBack { .. })),
            "{backend}: {no_history:?}"
        );

        set_alias(
            database,
            &move_to(CHAMPION, "1000000000000001", "alice", "first model"),
        )
        .await
        .unwrap();
        // Rolling back the first move has no earlier version to go to.
        let error = rollback(database, CHAMPION, "ops", "undo")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("not set before"), "{error}");
        set_alias(
            database,
            &move_to(CHAMPION, "2000000000000002", "bob", "better F1"),
        )
        .await
        .unwrap();
        let same = set_alias(
            database,
            &move_to(CHAMPION, "2000000000000002", "bob", "again"),
        )
        .await;
        assert!(
            matches!(same, Err(RegistryError::AliasUnchanged { .. })),
            "{same:?}"
        );
        let mut forced = move_to(CHAMPION, "3000000000000003", "carol", "hotfix for class 60");
        forced.forced = true;
        forced.decision = Some(serde_json::json!({ "promote": false }));
        set_alias(database, &forced).await.unwrap();
        set_alias(
            database,
            &move_to(CHALLENGER, "1000000000000001", "dave", "retest"),
        )
        .await
        .unwrap();

        // Invalid requests.
        assert!(matches!(
            set_alias(
                database,
                &move_to("Bad Alias", "1000000000000001", "x", "y")
            )
            .await,
            Err(RegistryError::InvalidName { .. })
        ));
        assert!(matches!(
            set_alias(database, &move_to(CHAMPION, "9999999999999999", "x", "y")).await,
            Err(RegistryError::UnknownModelVersion(_))
        ));
        let mut no_reason = move_to(CHAMPION, "1000000000000001", "x", "  ");
        no_reason.forced = true;
        assert!(matches!(
            set_alias(database, &no_reason).await,
            Err(RegistryError::ReasonRequired(_))
        ));

        let history = alias_history(database, Some(CHAMPION)).await.unwrap();
        assert_eq!(history.len(), 3, "{backend}: failed moves leave no trace");
        let newest = &history[0];
        assert_eq!(newest.actor, "carol");
        assert_eq!(newest.reason, "hotfix for class 60");
        assert!(newest.forced);
        assert_eq!(newest.decision.as_ref().unwrap()["promote"], false);
        assert_eq!(newest.from_version, Some(version_id("2000000000000002")));
        assert_eq!(newest.to_version, Some(version_id("3000000000000003")));
        assert_eq!(history[1].actor, "bob");
        assert!(!history[1].forced);
        assert_eq!(history[2].from_version, None);
        assert!(history[0].id > history[1].id && history[1].id > history[2].id);
        assert!(history.iter().all(|event| event.action == AliasAction::Set));
        assert_eq!(alias_history(database, None).await.unwrap().len(), 4);

        // One-step rollback, and again, walking back through the moves.
        let back = rollback(database, CHAMPION, "ops", "latency regression")
            .await
            .unwrap();
        assert_eq!(back.action, AliasAction::Rollback);
        assert_eq!(back.from_version, Some(version_id("3000000000000003")));
        assert_eq!(back.to_version, Some(version_id("2000000000000002")));
        assert_eq!(back.reason, "latency regression");
        assert_eq!(
            resolve(database, CHAMPION).await.unwrap().id,
            version_id("2000000000000002")
        );
        rollback(database, CHAMPION, "ops", "still bad")
            .await
            .unwrap();
        assert_eq!(
            resolve(database, CHAMPION).await.unwrap().id,
            version_id("1000000000000001")
        );
        assert!(matches!(
            rollback(database, CHAMPION, "ops", "more").await,
            Err(RegistryError::NothingToRollBack { .. })
        ));
        assert!(matches!(
            rollback(database, CHAMPION, "ops", "").await,
            Err(RegistryError::ReasonRequired(_))
        ));
        // A new move after rollbacks can be rolled back to where the alias was.
        set_alias(
            database,
            &move_to(CHAMPION, "3000000000000003", "erin", "retry"),
        )
        .await
        .unwrap();
        let undo = rollback(database, CHAMPION, "ops", "undo retry")
            .await
            .unwrap();
        assert_eq!(undo.to_version, Some(version_id("1000000000000001")));
        assert_eq!(
            alias_history(database, Some(CHAMPION)).await.unwrap().len(),
            7
        );

        // Removing an alias is a recorded move too, and can be rolled back.
        let removed = remove_alias(database, CHALLENGER, "dave", "done")
            .await
            .unwrap();
        assert_eq!(removed.action, AliasAction::Remove);
        assert_eq!(removed.to_version, None);
        assert!(resolve(database, CHALLENGER).await.is_err());
        assert!(matches!(
            remove_alias(database, CHALLENGER, "dave", "again").await,
            Err(RegistryError::UnknownAlias(_))
        ));
        rollback(database, CHALLENGER, "dave", "needed after all")
            .await
            .unwrap();
        assert_eq!(
            resolve(database, CHALLENGER).await.unwrap().id,
            version_id("1000000000000001")
        );
        let aliases = list_aliases(database).await.unwrap();
        assert_eq!(aliases.len(), 2);
        assert_eq!(aliases[0].alias, CHALLENGER);
        assert_eq!(aliases[0].updated_by, "dave");
    }
}

/// Scores from a table, as the model code would after re-running both models on a set.
struct TableScorer {
    scores: HashMap<String, (f64, Vec<(u16, f64)>)>,
    /// Evaluation set reported per version, to simulate a caller mixing up sets.
    reported_set: HashMap<String, String>,
    calls: Mutex<Vec<(String, String)>>,
    /// Moves the alias while scoring, to simulate a concurrent promotion.
    interfere: Option<(Database, AliasMove)>,
}

/// (version hex, weighted F1, per-class F1).
type Score<'a> = (&'a str, f64, &'a [(u16, f64)]);

impl TableScorer {
    fn new(scores: &[Score]) -> Self {
        Self {
            scores: scores
                .iter()
                .map(|(hex, weighted, classes)| {
                    (format!("mv-{hex}"), (*weighted, classes.to_vec()))
                })
                .collect(),
            reported_set: HashMap::new(),
            calls: Mutex::new(Vec::new()),
            interfere: None,
        }
    }
}

impl Rescorer for TableScorer {
    fn score<'a>(&'a self, version: &'a ModelVersion, evaluation_set: &'a str) -> ScoreFuture<'a> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push((version.id.to_string(), evaluation_set.to_string()));
            if let Some((database, alias_move)) = &self.interfere {
                let _ = set_alias(database, alias_move).await;
            }
            let (weighted, classes) = self
                .scores
                .get(version.id.as_str())
                .cloned()
                .ok_or_else(|| -> RescoreError { format!("no score for {}", version.id).into() })?;
            Ok(EvaluationSummary {
                model_version: version.id.clone(),
                evaluation_set: self
                    .reported_set
                    .get(version.id.as_str())
                    .cloned()
                    .unwrap_or_else(|| evaluation_set.to_string()),
                weighted_f1: weighted,
                per_class_f1: classes.into_iter().collect(),
            })
        })
    }
}

fn request(hex: &str, reason: &str) -> PromotionRequest {
    PromotionRequest {
        evaluation_set: Some("ds-0123456789abcdef:test".to_string()),
        ..PromotionRequest::champion(&format!("mv-{hex}"), "pipeline", reason)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_follows_the_policy() {
    const A: &str = "a000000000000001";
    const B: &str = "b000000000000002";
    const C: &str = "c000000000000003";
    const D: &str = "d000000000000004";
    const E: &str = "e000000000000005";
    for test_database in testing::databases().await {
        let backend = test_database.name();
        let database = &test_database.database;
        register_all(database, &[A, B, C, D, E]).await;
        let scorer = TableScorer::new(&[
            (A, 0.800, &[(10, 0.90), (40, 0.70)]),
            (B, 0.8049, &[(10, 0.90), (40, 0.72)]), // gain just below the margin
            (C, 0.8051, &[(10, 0.86), (40, 0.72)]), // just above, class drop 0.04 within bound
            (D, 0.900, &[(10, 0.80), (40, 0.95)]),  // big gain, class 10 drops 0.10
            (E, 0.700, &[(10, 0.50), (40, 0.50)]),  // worse
        ]);

        // No champion yet: the first version takes the alias without a comparison.
        let first = promote(database, &request(A, "first model"), &scorer)
            .await
            .unwrap();
        assert!(
            matches!(first, PromotionOutcome::FirstVersion { .. }),
            "{backend}"
        );
        assert!(scorer.calls.lock().unwrap().is_empty());

        // Just below the margin: refused, nothing moves.
        let below = promote(database, &request(B, "nightly"), &scorer)
            .await
            .unwrap();
        let PromotionOutcome::Refused { decision } = &below else {
            panic!("{backend}: expected a refusal, got {below:?}");
        };
        assert!(decision.weighted_f1_gain < 0.005);
        assert_eq!(resolve(database, CHAMPION).await.unwrap().id, version_id(A));
        // Both models were scored now, on the requested set.
        let calls = scorer.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                (format!("mv-{A}"), "ds-0123456789abcdef:test".to_string()),
                (format!("mv-{B}"), "ds-0123456789abcdef:test".to_string()),
            ]
        );

        // A per-class drop beyond the bound: refused despite a large gain.
        let dropped = promote(database, &request(D, "nightly"), &scorer)
            .await
            .unwrap();
        let PromotionOutcome::Refused { decision } = &dropped else {
            panic!("{backend}: expected a refusal, got {dropped:?}");
        };
        assert_eq!(decision.worst_class.map(|(code, _)| code), Some(10));
        assert!(decision
            .reasons
            .iter()
            .any(|reason| reason.contains("class 10")));

        // Just above the margin with a small class drop: promoted, decision recorded.
        let above = promote(database, &request(C, "nightly retrain"), &scorer)
            .await
            .unwrap();
        let PromotionOutcome::Promoted { event, decision } = &above else {
            panic!("{backend}: expected a promotion, got {above:?}");
        };
        assert!(decision.promote);
        assert_eq!(event.from_version, Some(version_id(A)));
        assert_eq!(event.to_version, Some(version_id(C)));
        assert!(!event.forced);
        let recorded = alias_history(database, Some(CHAMPION)).await.unwrap();
        assert_eq!(recorded[0].decision.as_ref().unwrap()["promote"], true);
        assert_eq!(
            recorded[0].decision.as_ref().unwrap()["challenger"],
            format!("mv-{C}")
        );
        assert_eq!(recorded[0].reason, "nightly retrain");

        // A looser policy lets D through.
        let loose = PromotionRequest {
            policy: PromotionPolicy {
                min_weighted_f1_gain: 0.005,
                max_class_f1_drop: 0.2,
            },
            ..request(D, "looser bound")
        };
        let promoted = promote(database, &loose, &scorer).await.unwrap();
        assert!(
            matches!(promoted, PromotionOutcome::Promoted { .. }),
            "{promoted:?}"
        );
        rollback(database, CHAMPION, "ops", "back to C")
            .await
            .unwrap();

        // Force without a reason is refused; with one, the overridden decision is recorded.
        let mut forced = request(E, "");
        forced.force = true;
        assert!(matches!(
            promote(database, &forced, &scorer).await,
            Err(RegistryError::ReasonRequired(_))
        ));
        forced.reason = "customer escalation".to_string();
        let outcome = promote(database, &forced, &scorer).await.unwrap();
        let PromotionOutcome::Forced { event, decision } = &outcome else {
            panic!("{backend}: expected a forced move, got {outcome:?}");
        };
        assert!(event.forced);
        assert!(!decision.as_ref().unwrap().promote);
        let recorded = alias_history(database, Some(CHAMPION)).await.unwrap();
        assert!(recorded[0].forced);
        assert_eq!(recorded[0].reason, "customer escalation");
        assert_eq!(recorded[0].decision.as_ref().unwrap()["promote"], false);
        assert_eq!(resolve(database, CHAMPION).await.unwrap().id, version_id(E));

        // Promoting the champion itself is refused.
        assert!(matches!(
            promote(database, &request(E, "again"), &scorer).await,
            Err(RegistryError::AlreadyPromoted { .. })
        ));
        // Without an evaluation set the models can not be compared (unless forced).
        let mut no_set = request(A, "compare?");
        no_set.evaluation_set = None;
        assert!(matches!(
            promote(database, &no_set, &scorer).await,
            Err(RegistryError::EvaluationSetRequired { .. })
        ));
        let forced_move = force_promote(database, CHAMPION, &format!("mv-{A}"), "ops", "emergency")
            .await
            .unwrap();
        assert!(matches!(
            forced_move,
            PromotionOutcome::Forced { decision: None, .. }
        ));
        assert!(
            force_promote(database, CHAMPION, &format!("mv-{C}"), "ops", " ")
                .await
                .is_err()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_never_compares_different_sets_or_stale_scores() {
    const A: &str = "a000000000000001";
    const B: &str = "b000000000000002";
    const C: &str = "c000000000000003";
    for test_database in testing::databases().await {
        let database = &test_database.database;
        register_all(database, &[A, B, C]).await;
        set_alias(database, &move_to(CHAMPION, A, "alice", "first"))
            .await
            .unwrap();

        // The rescorer reports another set for the challenger: refused.
        let mut scorer = TableScorer::new(&[(A, 0.8, &[]), (B, 0.9, &[])]);
        scorer
            .reported_set
            .insert(format!("mv-{B}"), "ds-ffffffffffffffff:test".to_string());
        let mismatch = promote(database, &request(B, "better"), &scorer).await;
        assert!(
            matches!(mismatch, Err(RegistryError::EvaluationSetMismatch { .. })),
            "{mismatch:?}"
        );

        // Summaries handed in directly must name the current champion and the challenger.
        let summary = |hex: &str, set: &str, weighted: f64| EvaluationSummary {
            model_version: version_id(hex),
            evaluation_set: set.to_string(),
            weighted_f1: weighted,
            per_class_f1: BTreeMap::new(),
        };
        let set = "ds-0123456789abcdef:test";
        let stale = promote_scored(
            database,
            &request(B, "better"),
            &summary(C, set, 0.7),
            &summary(B, set, 0.9),
        )
        .await;
        assert!(
            matches!(
                stale,
                Err(RegistryError::ScoreForWrongVersion {
                    role: "champion",
                    ..
                })
            ),
            "{stale:?}"
        );
        let other_set = promote_scored(
            database,
            &request(B, "better"),
            &summary(A, "ds-0123456789abcdef:validation", 0.7),
            &summary(B, "ds-0123456789abcdef:validation", 0.9),
        )
        .await;
        assert!(
            matches!(other_set, Err(RegistryError::EvaluationSetMismatch { .. })),
            "the request's set wins: {other_set:?}"
        );
        let good = promote_scored(
            database,
            &request(B, "better"),
            &summary(A, set, 0.80),
            &summary(B, set, 0.81),
        )
        .await
        .unwrap();
        assert!(matches!(good, PromotionOutcome::Promoted { .. }));

        // The alias moves while the models are being scored: the decision is not applied.
        let mut racing = TableScorer::new(&[(B, 0.80, &[]), (C, 0.90, &[])]);
        racing.interfere = Some((database.clone(), move_to(CHAMPION, A, "someone", "manual")));
        let raced = promote(database, &request(C, "better"), &racing).await;
        assert!(
            matches!(raced, Err(RegistryError::AliasMovedMeanwhile { .. })),
            "{raced:?}"
        );
        assert_eq!(resolve(database, CHAMPION).await.unwrap().id, version_id(A));

        // A scoring failure stops an unforced promotion and names the version.
        let failing = TableScorer::new(&[(A, 0.8, &[])]);
        let error = promote(database, &request(C, "better"), &failing)
            .await
            .unwrap_err();
        assert!(error.to_string().contains(&format!("mv-{C}")), "{error}");
        // Forced, it goes through and the scoring error is recorded in place of a decision.
        let mut forced = request(C, "model server down, approved by lead");
        forced.force = true;
        let outcome = promote(database, &forced, &failing).await.unwrap();
        assert!(matches!(
            outcome,
            PromotionOutcome::Forced { decision: None, .. }
        ));
        let recorded = alias_history(database, Some(CHAMPION)).await.unwrap();
        let note = recorded[0].decision.as_ref().unwrap();
        assert_eq!(note["compared"], false);
        assert!(
            note["error"].as_str().unwrap().contains("no score"),
            "{note}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_alias_moves_keep_a_consistent_history() {
    const MOVES: usize = 12;
    for test_database in testing::databases().await {
        let backend = test_database.name();
        let database = &test_database.database;
        let hexes: Vec<String> = (0..MOVES).map(|i| format!("{:016x}", 0xabc0 + i)).collect();
        let hex_refs: Vec<&str> = hexes.iter().map(String::as_str).collect();
        register_all(database, &hex_refs).await;
        let mut tasks = Vec::new();
        for (index, hex) in hexes.iter().enumerate() {
            let database = database.clone();
            let alias_move = move_to(CHAMPION, hex, &format!("actor-{index}"), "race");
            tasks.push(tokio::spawn(async move {
                set_alias(&database, &alias_move).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        // Every move starts where the previous one ended: no move was lost or interleaved.
        let mut history = alias_history(database, Some(CHAMPION)).await.unwrap();
        history.reverse();
        assert_eq!(history.len(), MOVES, "{backend}");
        assert_eq!(history[0].from_version, None);
        for pair in history.windows(2) {
            assert_eq!(
                pair[1].from_version, pair[0].to_version,
                "{backend}: {pair:?}"
            );
        }
        assert_eq!(
            resolve(database, CHAMPION).await.unwrap().id,
            history.last().unwrap().to_version.clone().unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_starts_with_its_alias_and_changes_without_a_move() {
    use prodcat_registry::{
        active_rollouts, start_rollout, stop_rollout, GuardRails, NewRollout, RolloutKind,
        Stickiness, CANARY,
    };
    for test_database in testing::databases().await {
        let backend = test_database.name();
        let database = &test_database.database;
        register_all(database, &["feed000000000001", "feed000000000002"]).await;
        let rollout = |share: f64| NewRollout {
            kind: RolloutKind::Canary,
            version: "mv-feed000000000002".to_string(),
            share,
            stickiness: Stickiness::Product,
            guard: GuardRails::default(),
            actor: "admin".to_string(),
            reason: "try it".to_string(),
        };
        start_rollout(database, &rollout(0.1)).await.unwrap();
        let running = active_rollouts(database).await.unwrap();
        assert_eq!(running.len(), 1, "{backend}");
        assert_eq!(running[0].share, 0.1);
        assert_eq!(running[0].version, version_id("feed000000000002"));
        let history = alias_history(database, Some(CANARY)).await.unwrap();
        assert_eq!(history.len(), 1, "{backend}");
        assert!(history[0].reason.contains("canary started at 10 %"));

        // The same version at another share: the settings change, the alias does not move.
        start_rollout(database, &rollout(0.5)).await.unwrap();
        let running = active_rollouts(database).await.unwrap();
        assert_eq!(running[0].share, 0.5, "{backend}");
        assert_eq!(
            alias_history(database, Some(CANARY)).await.unwrap().len(),
            1,
            "{backend}"
        );

        // An archived version is refused and nothing changes.
        archive_version(database, &version_id("feed000000000001"))
            .await
            .unwrap();
        let mut archived = rollout(0.2);
        archived.version = "mv-feed000000000001".to_string();
        assert!(start_rollout(database, &archived).await.is_err());
        let running = active_rollouts(database).await.unwrap();
        assert_eq!(running.len(), 1, "{backend}");
        assert_eq!(running[0].share, 0.5, "{backend}");

        stop_rollout(database, RolloutKind::Canary, "admin", "done", None)
            .await
            .unwrap();
        assert!(active_rollouts(database).await.unwrap().is_empty());
    }
}

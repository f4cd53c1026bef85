use super::*;
use crate::extract::Extractor;

fn sc() -> EstimatorConfig {
    EstimatorConfig::SelfConsistency { samples: 3, temperature: 0.7, extractor: Extractor::LastNumber }
}

fn stage(target: &str, estimator: Option<EstimatorConfig>, threshold: f64) -> StageConfig {
    StageConfig { target: target.into(), estimator, threshold, cost_hint_usd: None }
}

fn cascade(stages: Vec<StageConfig>, overrides: OverrideLimits) -> Cascade {
    Cascade::new(CascadeConfig { name: "math".into(), stages, overrides }).unwrap()
}

fn two_stage() -> Cascade {
    cascade(vec![stage("weak", Some(sc()), 0.6), stage("strong", None, 0.0)], OverrideLimits::default())
}

fn result(provider: &str, confidence: Option<f64>) -> StageResult {
    let estimate = confidence.map(|c| Estimate::measured(c, Some(0), None));
    StageResult {
        provider: provider.into(),
        answer: format!("{provider} says"),
        estimate,
        cost_usd: Some(1.0),
        latency_ms: 5,
    }
}

fn unavailable() -> StageResult {
    StageResult { estimate: Some(Estimate::unavailable(Unavailable::NoLogprobs, Some(0))), ..result("weak-1", None) }
}

fn verdicts(outcome: &CascadeOutcome) -> Vec<Verdict> {
    outcome.trace.iter().map(|t| t.verdict.clone()).collect()
}

#[test]
fn validation_names_the_field() {
    let check = |config: CascadeConfig, field: &str| match Cascade::new(config) {
        Err(CascadeError::InvalidConfig(f)) => assert_eq!(f.field, field),
        other => panic!("expected invalid {field}, got {other:?}"),
    };
    let base = two_stage().config().clone();
    check(CascadeConfig { name: String::new(), ..base.clone() }, "name");
    check(CascadeConfig { stages: vec![base.stages[0].clone()], ..base.clone() }, "stages");
    let mut c = base.clone();
    c.stages[0].estimator = None;
    check(c, "estimator");
    let mut c = base.clone();
    c.stages[0].threshold = 1.5;
    check(c, "threshold");
    let mut c = base.clone();
    c.stages[1].target = String::new();
    check(c, "target");
    let mut c = base.clone();
    c.stages[1].cost_hint_usd = Some(f64::NAN);
    check(c, "cost_hint_usd");
    let mut c = base.clone();
    c.overrides.min_threshold = 0.9;
    c.overrides.max_threshold = 0.1;
    check(c, "overrides.min_threshold");
    let mut c = base.clone();
    c.overrides.min_max_stage = 2;
    check(c, "overrides.min_max_stage");
    let mut c = base;
    c.stages[0].estimator =
        Some(EstimatorConfig::SelfConsistency { samples: 0, temperature: 0.7, extractor: Extractor::LastNumber });
    check(c, "estimator.samples");
}

#[test]
fn confident_weak_stage_stops() {
    let cascade = two_stage();
    let mut run = cascade.start(&CascadeOverride::default()).unwrap();
    let Next::Call(call) = run.next() else { panic!("expected a call") };
    assert_eq!(
        (call.stage, call.target, call.samples, call.temperature, call.logprobs),
        (0, "weak", 3, Some(0.7), false)
    );
    assert!(!call.last);
    let decision = run.record(result("weak-1", Some(0.6))).unwrap();
    assert_eq!(decision, Decision::Stop { confidence: 0.6, reason: StopReason::Confident });
    assert_eq!(run.next(), Next::Done);
    assert!(matches!(run.record(result("x", Some(1.0))), Err(CascadeError::Misuse { .. })));
    assert!(matches!(run.skip(SkipReason::AllTripped), Err(CascadeError::Misuse { .. })));
    let outcome = run.finish();
    let answer = outcome.answer.clone().unwrap();
    assert_eq!((answer.stage, answer.provider.as_str(), answer.below_threshold), (0, "weak-1", false));
    assert!(!outcome.escalated());
    assert_eq!(outcome.trace[0].confidence, Some(0.6));
    assert_eq!(outcome.trace[0].estimator, Some(EstimatorKind::SelfConsistency));
}

#[test]
fn low_or_unmeasured_confidence_escalates_and_the_last_stage_stops() {
    let cascade = two_stage();
    for (first, reason) in [
        (result("weak-1", Some(0.59)), EscalateReason::BelowThreshold),
        (unavailable(), EscalateReason::EstimateUnavailable),
    ] {
        let mut run = cascade.start(&CascadeOverride::default()).unwrap();
        assert_eq!(run.record(first).unwrap(), Decision::Escalate { reason });
        let Next::Call(call) = run.next() else { panic!("expected stage 1") };
        assert_eq!((call.stage, call.last), (1, true));
        // The last stage stops even with no estimate.
        assert_eq!(
            run.record(result("strong-1", None)).unwrap(),
            Decision::Stop { confidence: 0.0, reason: StopReason::LastStage }
        );
        let outcome = run.finish();
        assert!(outcome.escalated());
        assert_eq!(outcome.answer.as_ref().unwrap().provider, "strong-1");
        assert_eq!(
            verdicts(&outcome)[..],
            [Verdict::Escalated { reason }, Verdict::Stopped { reason: StopReason::LastStage }]
        );
        assert_eq!(outcome.cost_usd(), 2.0);
    }
    // An unavailable estimate escalates even at threshold 0, and its reason is in the trace.
    let mut run = cascade.start(&CascadeOverride { threshold: Some(0.0), max_stage: None }).unwrap();
    assert_eq!(run.record(unavailable()).unwrap(), Decision::Escalate { reason: EscalateReason::EstimateUnavailable });
    assert_eq!(run.trace()[0].unavailable, Some(Unavailable::NoLogprobs));
    assert_eq!(run.trace()[0].confidence, None);
}

#[test]
fn overrides_are_clamped_to_the_operator_limits() {
    let limits = OverrideLimits { min_threshold: 0.5, max_threshold: 0.9, allow_max_stage: true, min_max_stage: 1 };
    let three = cascade(vec![stage("a", Some(sc()), 0.6), stage("b", Some(sc()), 0.7), stage("c", None, 0.0)], limits);
    let applied = three.apply(&CascadeOverride { threshold: Some(0.99), max_stage: Some(0) }).unwrap();
    assert_eq!(applied.threshold, Some(Applied { requested: 0.99, used: 0.9 }));
    assert_eq!(applied.max_stage, Some(Applied { requested: 0, used: 1 }));
    assert!(applied.threshold.unwrap().clamped());
    let applied = three.apply(&CascadeOverride { threshold: Some(0.1), max_stage: Some(7) }).unwrap();
    assert_eq!((applied.threshold.unwrap().used, applied.max_stage.unwrap().used), (0.5, 2));
    assert!(matches!(
        three.apply(&CascadeOverride { threshold: Some(f64::NAN), max_stage: None }),
        Err(CascadeError::InvalidOverride { field: "threshold", .. })
    ));

    // max_stage 1: stage 1 stops whatever its confidence, and says why.
    let mut run = three.start(&CascadeOverride { threshold: Some(0.8), max_stage: Some(1) }).unwrap();
    let Next::Call(call) = run.next() else { panic!() };
    assert_eq!(call.threshold, 0.8);
    assert_eq!(
        run.record(result("a", Some(0.7))).unwrap(),
        Decision::Escalate { reason: EscalateReason::BelowThreshold }
    );
    let Next::Call(call) = run.next() else { panic!() };
    assert!(call.last);
    assert_eq!(
        run.record(result("b", Some(0.1))).unwrap(),
        Decision::Stop { confidence: 0.1, reason: StopReason::MaxStage }
    );
    assert_eq!(run.next(), Next::Done);

    // An operator who forbids max_stage keeps every stage.
    let strict = cascade(
        vec![stage("a", Some(sc()), 0.6), stage("b", None, 0.0)],
        OverrideLimits { allow_max_stage: false, ..OverrideLimits::default() },
    );
    let applied = strict.apply(&CascadeOverride { threshold: None, max_stage: Some(0) }).unwrap();
    assert_eq!(applied.max_stage, Some(Applied { requested: 0, used: 1 }));
}

#[test]
fn skipped_stages() {
    let three = cascade(
        vec![stage("a", Some(sc()), 0.6), stage("b", Some(sc()), 0.6), stage("c", None, 0.0)],
        OverrideLimits::default(),
    );
    // The weak stage is tripped: the next one answers.
    let mut run = three.start(&CascadeOverride::default()).unwrap();
    run.skip(SkipReason::AllTripped).unwrap();
    assert_eq!(
        run.record(result("b", Some(0.9))).unwrap(),
        Decision::Stop { confidence: 0.9, reason: StopReason::Confident }
    );
    let outcome = run.finish();
    assert_eq!(outcome.trace[0].verdict, Verdict::Skipped { reason: SkipReason::AllTripped });
    assert_eq!(outcome.answer.unwrap().stage, 1);

    // Everything after the escalations is down: the most confident earlier answer, flagged; ties go later.
    let mut run = three.start(&CascadeOverride::default()).unwrap();
    run.record(result("a", Some(0.4))).unwrap();
    run.record(result("b", Some(0.4))).unwrap();
    run.skip(SkipReason::CallFailed { detail: "timeout".into() }).unwrap();
    assert_eq!(run.next(), Next::Done);
    let answer = run.finish().answer.unwrap();
    assert_eq!((answer.stage, answer.below_threshold, answer.text.as_str()), (1, true, "b says"));

    // Nothing answered: no answer, full trace.
    let mut run = three.start(&CascadeOverride::default()).unwrap();
    for _ in 0..3 {
        run.skip(SkipReason::AllTripped).unwrap();
    }
    let outcome = run.finish();
    assert_eq!((outcome.answer, outcome.trace.len()), (None, 3));
}

#[test]
fn answer_text_comes_from_the_chosen_sample() {
    let samples = [Sample::text("first"), Sample::text("majority")];
    let r = StageResult::from_samples("p", &samples, Some(Estimate::measured(0.5, Some(1), None)), None, 1);
    assert_eq!(r.answer, "majority");
    let r = StageResult::from_samples("p", &samples, None, None, 1);
    assert_eq!(r.answer, "first");
    let r = StageResult::from_samples("p", &[], None, None, 1);
    assert_eq!(r.answer, "");
}

#[test]
fn config_and_trace_serde() {
    let json = r#"{
        "name": "math",
        "stages": [
            {"target": "mixtral", "threshold": 0.7, "cost_hint_usd": 0.0003,
             "estimator": {"kind": "verifier", "source": {"kind": "local", "path": "verifier.json"}}},
            {"target": "gpt-4"}
        ],
        "overrides": {"min_threshold": 0.2, "max_threshold": 0.95, "allow_max_stage": false, "min_max_stage": 1}
    }"#;
    let config: CascadeConfig = serde_json::from_str(json).unwrap();
    let cascade = Cascade::new(config).unwrap();
    assert_eq!(cascade.len(), 2);
    assert!(serde_json::from_str::<CascadeConfig>(r#"{"name":"x","stages":[],"colour":1}"#).is_err());
    let mut run = cascade.start(&CascadeOverride::default()).unwrap();
    run.record(result("mixtral", Some(0.2))).unwrap();
    run.record(result("gpt-4", None)).unwrap();
    let outcome = run.finish();
    let text = serde_json::to_string(&outcome).unwrap();
    assert!(text.contains(r#""verdict":"escalated","reason":"below_threshold""#), "{text}");
    assert_eq!(serde_json::from_str::<CascadeOutcome>(&text).unwrap(), outcome);
    let request: CascadeOverride = serde_json::from_str(r#"{"threshold":0.8}"#).unwrap();
    assert_eq!(request, CascadeOverride { threshold: Some(0.8), max_stage: None });
}

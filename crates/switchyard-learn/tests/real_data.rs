//! Loads the real shared data sets and checks the counts their READMEs state. Skips (and says so) when the data
//! folder is absent.

use std::path::{Path, PathBuf};

use switchyard_learn::dataset::{default_data_dir, outcomes, routellm};
use switchyard_learn::split::split_table;

fn data_dir() -> Option<PathBuf> {
    let dir = default_data_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    if dir.join("routellm").is_dir() && dir.join("zeroeval").is_dir() {
        Some(dir)
    } else {
        println!("skipped: shared data not found at {} (set SWITCHYARD_DATA)", dir.display());
        None
    }
}

#[test]
fn routellm_counts_after_decontamination() -> Result<(), Box<dyn std::error::Error>> {
    let Some(dir) = data_dir() else { return Ok(()) };
    let opts = routellm::RouteLlmOptions::default();
    for (set, expected, weak, strong) in [
        (routellm::RouteLlmSet::Gsm8k, 1307, 0.6, 0.8),
        (routellm::RouteLlmSet::Mmlu, 14037, 0.6, 0.75),
        (routellm::RouteLlmSet::MtBench, 72, 0.6, 0.85),
    ] {
        let t = routellm::load(&dir.join("routellm"), set, &opts)?;
        assert_eq!(t.queries.len(), expected, "{set}");
        assert!(t.fully_costed(), "{set}");
        // The strong model is better on every set, by a clear gap.
        assert!(
            t.mean_quality(0) > weak && t.mean_quality(1) > strong,
            "{set}: {} {}",
            t.mean_quality(0),
            t.mean_quality(1)
        );
        assert!(t.mean_quality(1) > t.mean_quality(0) + 0.05, "{set}");
        let (train, test) = split_table(&t, 0.3, 1)?;
        let train_ids: std::collections::HashSet<&str> = train.queries.iter().map(|q| q.id.as_str()).collect();
        assert!(test.queries.iter().all(|q| !train_ids.contains(q.id.as_str())));
        let train_prompts: std::collections::HashSet<&str> = train.queries.iter().map(|q| q.prompt.as_str()).collect();
        assert!(test.queries.iter().all(|q| !train_prompts.contains(q.prompt.as_str())), "{set}: prompt leak");
    }
    Ok(())
}

#[test]
fn zeroeval_models_and_prices() -> Result<(), Box<dyn std::error::Error>> {
    let Some(dir) = data_dir() else { return Ok(()) };
    let t = outcomes::load_zeroeval(&dir.join("zeroeval"))?;
    assert_eq!(t.queries.len(), 2840);
    assert_eq!(t.models.len(), 27);
    assert_eq!(t.models.iter().filter(|m| m.is_priced()).count(), 17);
    let mini = t.require_model("gpt-4o-mini-2024-07-18")?;
    // The README gives 94.24 / 75.88 / 52.15 per task; the overall mean is their weighted mean.
    let acc = t.mean_quality(mini);
    let expected = (0.9424 * 1319.0 + 0.7588 * 800.0 + 0.5215 * 721.0) / 2840.0;
    assert!((acc - expected).abs() < 5e-4, "{acc} vs {expected}");
    let priced = t.select_models(|m| m.is_priced());
    assert!(priced.fully_costed());
    Ok(())
}

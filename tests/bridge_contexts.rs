//! Per-session contexts: two sessions on one worker each use their own DSPy LM.

mod support;

use std::collections::HashMap;

use pyvisor::{Ref, Value};
use support::{pool, runtime};

async fn ask(s: &pyvisor::Session, predictor: &Ref, question: &str) -> String {
    let prediction: Ref = s
        .call_method(
            predictor,
            "__call__",
            &(),
            &HashMap::from([("question", question)]),
        )
        .await
        .unwrap();
    s.get_attr(&prediction, "answer").await.unwrap()
}

#[tokio::test]
async fn two_sessions_on_one_worker_each_use_their_own_dspy_lm() {
    let rt = runtime(vec![pool("dspy").size(1).preload("dspy")]).await;
    let a = rt.session("dspy", "a").unwrap();
    let b = rt.session("dspy", "b").unwrap();

    let mut predictors = Vec::new();
    let mut lms = Vec::new();
    for (s, label) in [(&a, "from A"), (&b, "from B")] {
        let answers = vec![HashMap::from([("answer", label)]); 4];
        let lm: Ref = s
            .call("dspy.utils", "DummyLM", &(answers,), &())
            .await
            .unwrap();
        s.push_context("dspy", "context", &(), &HashMap::from([("lm", &lm)]))
            .await
            .unwrap();
        let predictor: Ref = s
            .call("dspy", "Predict", &("question -> answer",), &())
            .await
            .unwrap();
        predictors.push(predictor);
        lms.push(lm);
    }
    let pid_a: u32 = a.call("os", "getpid", &(), &()).await.unwrap();
    let pid_b: u32 = b.call("os", "getpid", &(), &()).await.unwrap();
    assert_eq!(pid_a, pid_b, "both sessions share one worker");

    assert_eq!(ask(&a, &predictors[0], "q1").await, "from A");
    assert_eq!(ask(&b, &predictors[1], "q2").await, "from B");
    assert_eq!(ask(&a, &predictors[0], "q3").await, "from A");

    // Each LM recorded only its own session's calls.
    let history_a: Value = a.get_attr(&lms[0], "history").await.unwrap();
    let history_b: Value = b.get_attr(&lms[1], "history").await.unwrap();
    assert_eq!(history_a.items().map(<[_]>::len), Some(2));
    assert_eq!(history_b.items().map(<[_]>::len), Some(1));

    // Without its context, a session has no LM configured.
    a.clear_contexts().await.unwrap();
    let prediction = a
        .call_method::<Ref>(
            &predictors[0],
            "__call__",
            &(),
            &HashMap::from([("question", "q4")]),
        )
        .await;
    assert!(
        matches!(prediction, Err(pyvisor::Error::Python(_))),
        "{prediction:?}"
    );
    rt.shutdown().await;
}

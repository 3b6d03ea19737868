//! Thin, typed helpers for DSPy over a [`Session`]: LMs, per-session LM contexts, `Predict`,
//! `ChainOfThought`, examples, GEPA, and LM history — so a Rust program drives DSPy without
//! writing Python strings for the common steps.
//!
//! Every helper is one or two ordinary session calls; the objects live in the session's worker
//! as refs. Needs `dspy` importable by the pool's interpreter. [`Dspy::history`] and
//! [`Dspy::instructions`] use `builtins.eval`, so they need a pool with
//! [`allow_eval`](crate::PoolConfig::allow_eval).
//!
//! # Examples
//!
//! ```no_run
//! # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
//! use pyvisor::dspy::Dspy;
//! use std::collections::HashMap;
//!
//! let s = rt.session("triage_pool", "triage_1")?;
//! let dspy = Dspy::new(&s);
//! let lm = dspy.lm("openai/gpt-4o-mini", &HashMap::from([("temperature", 0.2)])).await?;
//! dspy.use_lm(&lm).await?;
//! let triage = dspy.predict("ticket -> category, urgency, action").await?;
//! let p = dspy.forward(&triage, &HashMap::from([("ticket", "Checkout fails with a 500")])).await?;
//! let category: String = dspy.field(&p, "category").await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::runtime::Session;
use crate::value::{Ref, Value};

/// A `dspy.LM` (or any LM object) in a session's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lm(pub Ref);

/// A DSPy module (`Predict`, `ChainOfThought`, an optimized program).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module(pub Ref);

/// A `dspy.Prediction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction(pub Ref);

/// A `dspy.Example` with its inputs marked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Example(pub Ref);

/// One entry of an LM's `history`: the fields pyvisor reads, plus the whole entry.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The model string.
    #[serde(default)]
    pub model: Option<String>,
    /// The chat messages sent (DSPy's full prompt), as `{role, content}` maps.
    #[serde(default)]
    pub messages: Vec<Value>,
    /// The raw completions.
    #[serde(default)]
    pub outputs: Vec<Value>,
    /// Token usage (OpenAI style: `prompt_tokens`, `completion_tokens`, `total_tokens`).
    #[serde(default)]
    pub usage: Value,
    /// The provider response object: a ref (it has no value form).
    #[serde(default)]
    pub response: Value,
}

impl HistoryEntry {
    /// Total tokens, from `usage.total_tokens` or prompt + completion.
    pub fn total_tokens(&self) -> Option<i64> {
        let int = |k: &str| self.usage.get(k).and_then(Value::as_f64).map(|f| f as i64);
        int("total_tokens").or_else(|| Some(int("prompt_tokens")? + int("completion_tokens")?))
    }

    /// The content of the last message (the user turn with the actual input).
    pub fn last_message(&self) -> Option<&str> {
        self.messages.last()?.get("content")?.as_str()
    }
}

/// DSPy helpers bound to one session.
#[derive(Debug, Clone, Copy)]
pub struct Dspy<'s> {
    session: &'s Session,
}

impl<'s> Dspy<'s> {
    /// Helpers for `session`.
    pub fn new(session: &'s Session) -> Self {
        Dspy { session }
    }

    /// `dspy.LM(model, **kwargs)`.
    ///
    /// # Errors
    ///
    /// As [`Session::call`].
    pub async fn lm(&self, model: &str, kwargs: &(impl Serialize + ?Sized)) -> Result<Lm, Error> {
        self.session
            .call("dspy", "LM", &(model,), kwargs)
            .await
            .map(Lm)
    }

    /// An LM made by any factory, e.g. `("pyvisor_demo", "make_lm")`.
    ///
    /// # Errors
    ///
    /// As [`Session::call`].
    pub async fn lm_from(
        &self,
        module: &str,
        function: &str,
        kwargs: &(impl Serialize + ?Sized),
    ) -> Result<Lm, Error> {
        self.session
            .call(module, function, &(), kwargs)
            .await
            .map(Lm)
    }

    /// Makes `lm` this session's LM: every later request of the session runs inside
    /// `dspy.context(lm=lm)`, so sessions sharing a worker keep their own LM (unlike the
    /// process-global `dspy.configure`).
    ///
    /// # Errors
    ///
    /// As [`Session::push_context`].
    pub async fn use_lm(&self, lm: &Lm) -> Result<(), Error> {
        self.session
            .push_context("dspy", "context", &(), &HashMap::from([("lm", &lm.0)]))
            .await
    }

    /// `dspy.Predict(signature)`.
    ///
    /// # Errors
    ///
    /// As [`Session::call`].
    pub async fn predict(&self, signature: &str) -> Result<Module, Error> {
        self.session
            .call("dspy", "Predict", &(signature,), &())
            .await
            .map(Module)
    }

    /// `dspy.ChainOfThought(signature)`.
    ///
    /// # Errors
    ///
    /// As [`Session::call`].
    pub async fn chain_of_thought(&self, signature: &str) -> Result<Module, Error> {
        self.session
            .call("dspy", "ChainOfThought", &(signature,), &())
            .await
            .map(Module)
    }

    /// Runs `module(**inputs)`.
    ///
    /// # Errors
    ///
    /// As [`Session::call`].
    pub async fn forward(
        &self,
        module: &Module,
        inputs: &(impl Serialize + ?Sized),
    ) -> Result<Prediction, Error> {
        self.session
            .call_method(&module.0, "__call__", &(), inputs)
            .await
            .map(Prediction)
    }

    /// One output field of a prediction.
    ///
    /// # Errors
    ///
    /// As [`Session::get_attr`].
    pub async fn field<T: DeserializeOwned + 'static>(
        &self,
        prediction: &Prediction,
        name: &str,
    ) -> Result<T, Error> {
        self.session.get_attr(&prediction.0, name).await
    }

    /// `dspy.Example(**fields).with_inputs(*inputs)`.
    ///
    /// # Errors
    ///
    /// As [`Session::call`].
    pub async fn example(
        &self,
        fields: &(impl Serialize + ?Sized),
        inputs: &[&str],
    ) -> Result<Example, Error> {
        let raw: Ref = self.session.call("dspy", "Example", &(), fields).await?;
        let example: Ref = self
            .session
            .call_method(&raw, "with_inputs", &inputs, &())
            .await?;
        let _ = self.session.release(&raw).await;
        Ok(Example(example))
    }

    /// `dspy.GEPA(metric, reflection_lm=reflection_lm, **options)`.
    ///
    /// # Errors
    ///
    /// As [`Session::call`].
    pub async fn gepa(
        &self,
        metric: &Ref,
        reflection_lm: &Lm,
        options: &HashMap<&str, Value>,
    ) -> Result<Ref, Error> {
        let mut kwargs: Vec<(Value, Value)> = vec![(
            Value::Str("reflection_lm".into()),
            Value::Ref(reflection_lm.0.clone()),
        )];
        kwargs.extend(
            options
                .iter()
                .map(|(k, v)| (Value::Str((*k).into()), v.clone())),
        );
        self.session
            .call("dspy", "GEPA", &(metric,), &Value::Map(kwargs))
            .await
    }

    /// `optimizer.compile(student, trainset=..., valset=...)`.
    ///
    /// # Errors
    ///
    /// As [`Session::call_method`].
    pub async fn compile(
        &self,
        optimizer: &Ref,
        student: &Module,
        trainset: &[Example],
        valset: &[Example],
    ) -> Result<Module, Error> {
        #[derive(Serialize)]
        struct Sets<'a> {
            trainset: &'a [Example],
            valset: &'a [Example],
        }
        self.session
            .call_method(
                optimizer,
                "compile",
                &(&student.0,),
                &Sets { trainset, valset },
            )
            .await
            .map(Module)
    }

    /// The last `n` entries of `lm.history`, read with
    /// `builtins.eval("list(lm.history[-n:])", {"lm": lm})`.
    ///
    /// # Errors
    ///
    /// As [`Session::eval`].
    pub async fn history(&self, lm: &Lm, n: usize) -> Result<Vec<HistoryEntry>, Error> {
        let expr = format!("list(lm.history[-{n}:])");
        self.session
            .eval(&expr, &HashMap::from([("lm", &lm.0)]))
            .await
    }

    /// The instructions of each predictor of `module`, in order.
    ///
    /// # Errors
    ///
    /// As [`Session::eval`].
    pub async fn instructions(&self, module: &Module) -> Result<Vec<String>, Error> {
        self.session
            .eval(
                "[p.signature.instructions for p in m.predictors()]",
                &HashMap::from([("m", &module.0)]),
            )
            .await
    }
}

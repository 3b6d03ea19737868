use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

use super::ext::{self, Ext};
use crate::identity::{SlotGen, WorkerId};

/// A handle on a live Python object held by one worker process.
///
/// Results whose leaves have no value form (DSPy modules, `re.Pattern`, LiteLLM responses, ...)
/// come back as refs. Pass a ref anywhere in later arguments of the same session — the worker
/// replaces it with the live object — or use it as the target of
/// [`Session::call_method`](crate::Session::call_method) and friends. A call that carries refs
/// always runs on the worker that holds them.
///
/// A `Ref` is plain data: cloning or dropping it does nothing in Python. Release refs with
/// [`Session::release`](crate::Session::release) or with their session.
///
/// # Examples
///
/// ```no_run
/// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
/// use pyvisor::Ref;
/// let s = rt.session("p", "s1")?;
/// let pattern: Ref = s.call("re", "compile", &(r"\d+",), &()).await?;
/// assert_eq!(pattern.type_name(), "Pattern");
/// let source: String = s.get_attr(&pattern, "pattern").await?;
/// assert_eq!(source, r"\d+");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ref {
    pub(crate) id: u64,
    pub(crate) session: Option<String>,
    pub(crate) worker: WorkerId,
    pub(crate) type_name: String,
    pub(crate) module: String,
}

impl Ref {
    /// The ref's id, unique within its worker process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The session that owns it (`None` for refs made outside a session).
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The worker process that holds the object.
    pub fn worker(&self) -> &WorkerId {
        &self.worker
    }

    /// The object's class name (`__qualname__`), e.g. `Pattern`.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The module of the object's class, e.g. `re`.
    pub fn module(&self) -> &str {
        &self.module
    }

    fn write<S: Serializer>(&self, s: S, tag: i8) -> Result<S::Ok, S::Error> {
        SEEN.with(|seen| {
            if let Some(seen) = seen.borrow_mut().as_mut() {
                seen.push(self.clone());
            }
        });
        let payload = self.to_payload().map_err(serde::ser::Error::custom)?;
        ext::serialize_ext(s, tag, &payload)
    }

    pub(crate) fn to_payload(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(&RefPayload {
            id: self.id,
            session: self.session.clone(),
            pool: self.worker.pool.clone(),
            slot: self.worker.slot,
            generation: self.worker.generation,
            type_name: self.type_name.clone(),
            module: self.module.clone(),
        })
    }

    pub(crate) fn from_payload<E: de::Error>(data: &[u8]) -> Result<Ref, E> {
        let p: RefPayload = ext::decode_payload(data)?;
        if p.session.is_some() {
            ISSUED.with(|issued| {
                if issued.get().is_some() {
                    issued.set(Some(Some(SlotGen::new(p.slot, p.generation))));
                }
            });
        }
        Ok(Ref {
            id: p.id,
            session: p.session,
            worker: WorkerId::new(p.pool, p.slot, p.generation),
            type_name: p.type_name,
            module: p.module,
        })
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<{}.{} ref {} on {}>",
            self.module, self.type_name, self.id, self.worker
        )
    }
}

/// A ref on a Python generator or iterator: consume it with
/// [`Session::stream`](crate::Session::stream).
///
/// # Examples
///
/// ```no_run
/// # async fn f(rt: pyvisor::Runtime) -> Result<(), pyvisor::Error> {
/// use futures::StreamExt;
/// let s = rt.session("p", "s1")?;
/// let it: pyvisor::StreamRef = s.call("builtins", "iter", &(vec![1, 2, 3],), &()).await?;
/// let items: Vec<i64> = s.stream::<i64>(&it).map(|r| r.unwrap()).collect().await;
/// assert_eq!(items, [1, 2, 3]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamRef(pub(crate) Ref);

impl AsRef<Ref> for StreamRef {
    /// The underlying ref (id, session, worker, type).
    fn as_ref(&self) -> &Ref {
        &self.0
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RefPayload {
    id: u64,
    session: Option<String>,
    pool: String,
    slot: usize,
    generation: u64,
    #[serde(rename = "type")]
    type_name: String,
    module: String,
}

impl Serialize for Ref {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.write(s, ext::REF)
    }
}

impl Serialize for StreamRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.write(s, ext::STREAM_REF)
    }
}

struct RefVisitor(i8);

impl<'de> Visitor<'de> for RefVisitor {
    type Value = Ref;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 == ext::REF {
            "a ref"
        } else {
            "a stream ref"
        })
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Ref, D::Error> {
        let e = Ext::deserialize(d)?;
        if e.tag != self.0 {
            return Err(de::Error::custom(format!(
                "expected ext {} but got ext {}",
                self.0, e.tag
            )));
        }
        Ref::from_payload(&e.data)
    }
}

impl<'de> Deserialize<'de> for Ref {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ref, D::Error> {
        d.deserialize_newtype_struct(ext::EXT_NAME, RefVisitor(ext::REF))
    }
}

impl<'de> Deserialize<'de> for StreamRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StreamRef, D::Error> {
        d.deserialize_newtype_struct(ext::EXT_NAME, RefVisitor(ext::STREAM_REF))
            .map(StreamRef)
    }
}

thread_local! {
    static SEEN: RefCell<Option<Vec<Ref>>> = const { RefCell::new(None) };
    /// While a reply is decoded: the worker of the last session ref decoded (see
    /// [`capture_issued`]).
    /// `None` when no reply is being decoded.
    static ISSUED: Cell<Option<Option<SlotGen>>> = const { Cell::new(None) };
}

/// Runs `f` (a synchronous decode of one reply) and returns, with its outcome, the worker that
/// issued the session refs it decoded, if any (one reply's refs all come from the worker that
/// ran the call). The pool learns this way that a session holds state on that worker.
pub(crate) fn capture_issued<T>(f: impl FnOnce() -> T) -> (T, Option<SlotGen>) {
    let outer = ISSUED.with(|issued| issued.replace(Some(None)));
    let out = f();
    let issued = ISSUED.with(|issued| issued.replace(outer));
    (out, issued.flatten())
}

/// Runs `f` (a synchronous serialization) and returns the refs it serialized.
pub(crate) fn collect_refs<T>(f: impl FnOnce() -> T) -> (T, Vec<Ref>) {
    let outer = SEEN.with(|seen| seen.borrow_mut().replace(Vec::new()));
    let out = f();
    let refs = SEEN.with(|seen| std::mem::replace(&mut *seen.borrow_mut(), outer));
    (out, refs.unwrap_or_default())
}

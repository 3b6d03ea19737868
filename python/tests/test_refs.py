import pytest

from pyvisor_worker import refs
from pyvisor_worker.refs import Registry, RefNotFound, RefSessionMismatch


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Thing:
    pass


def test_register_returns_the_payload_map():
    registry = Registry(identity={"pool": "pool-a", "slot": 2, "generation": 9})
    thing = Thing()
    payload = registry.register(thing, "s1")
    assert payload == {"id": payload["id"], "session": "s1", "pool": "pool-a", "slot": 2,
                       "generation": 9, "type": "Thing", "module": __name__}
    assert registry.resolve(payload, "s1") is thing


def test_ids_are_a_counter_and_never_reused():
    registry = Registry()
    first = registry.register(Thing(), None)["id"]
    second = registry.register(Thing(), None)["id"]
    registry.release(None, [second])
    third = registry.register(Thing(), None)["id"]
    assert first >= 1 and second == first + 1 and third == second + 1


def test_nested_class_names_are_qualnames():
    class Local:
        pass

    payload = Registry().register(Local(), None)
    assert payload["type"].endswith("<locals>.Local")


def test_an_unknown_id_is_ref_not_found_naming_the_id():
    registry = Registry()
    with pytest.raises(RefNotFound) as info:
        registry.resolve({"id": 4242}, None)
    assert "4242" in str(info.value)
    assert info.value.kind == "ref_not_found"
    with pytest.raises(RefNotFound):
        registry.resolve({"id": "x"}, None)
    with pytest.raises(RefNotFound):
        registry.resolve({}, None)


def test_another_sessions_ref_is_a_mismatch():
    registry = Registry()
    payload = registry.register(Thing(), "s1")
    with pytest.raises(RefSessionMismatch) as info:
        registry.resolve(payload, "s2")
    assert info.value.kind == "ref_session_mismatch"
    assert "'s1'" in str(info.value) and "'s2'" in str(info.value)
    with pytest.raises(RefSessionMismatch):
        registry.resolve(payload, None)
    # The session in the payload is not trusted: the registry's owner counts.
    forged = dict(payload, session="s2")
    with pytest.raises(RefSessionMismatch):
        registry.resolve(forged, "s2")


def test_lru_eviction_at_the_limit():
    registry = Registry(max_refs=3)
    things = [Thing() for _ in range(4)]
    ids = [registry.register(t, None)["id"] for t in things[:3]]
    registry.resolve({"id": ids[0]}, None)  # ids[1] is now the least recently used
    fourth = registry.register(things[3], None)["id"]
    assert len(registry) == 3
    assert registry.ids() == [ids[2], ids[0], fourth]
    with pytest.raises(RefNotFound):
        registry.resolve({"id": ids[1]}, None)


def test_eviction_drops_the_object():
    import weakref

    registry = Registry(max_refs=1)
    thing = Thing()
    alive = weakref.ref(thing)
    registry.register(thing, None)
    del thing
    assert alive() is not None
    registry.register(Thing(), None)
    assert alive() is None


def test_ttl_eviction_on_create_and_on_resolve():
    clock = Clock()
    registry = Registry(ttl=10.0, clock=clock)
    old = registry.register(Thing(), None)["id"]
    clock.now += 6
    kept = registry.register(Thing(), None)["id"]
    clock.now += 5  # old unused for 11 s, kept for 5 s
    assert registry.resolve({"id": kept}, None) is not None
    assert old not in registry
    clock.now += 9  # kept was used 9 s ago: still there
    assert registry.resolve({"id": kept}, None) is not None
    clock.now += 10.5
    registry.register(Thing(), None)
    assert kept not in registry
    with pytest.raises(RefNotFound):
        registry.resolve({"id": kept}, None)


def test_no_ttl_means_refs_stay():
    clock = Clock()
    registry = Registry(clock=clock)
    ref_id = registry.register(Thing(), None)["id"]
    clock.now += 10 ** 9
    assert registry.resolve({"id": ref_id}, None) is not None


def test_release_some_and_release_a_session():
    registry = Registry()
    a1 = registry.register(Thing(), "a")["id"]
    a2 = registry.register(Thing(), "a")["id"]
    a3 = registry.register(Thing(), "a")["id"]
    b1 = registry.register(Thing(), "b")["id"]
    n1 = registry.register(Thing(), None)["id"]
    assert registry.release("a", [a1, 999, b1, a1]) == 1  # unknown and foreign ids are ignored
    assert a1 not in registry and b1 in registry
    assert registry.release("a", None) == 2
    assert a2 not in registry and a3 not in registry
    assert registry.ids() == [b1, n1]
    assert registry.release("a", None) == 0
    assert registry.release(None, None) == 1
    assert registry.ids() == [b1]


def test_discard_ignores_sessions():
    registry = Registry()
    ids = [registry.register(Thing(), s)["id"] for s in ("a", "b", None)]
    registry.discard(ids[:2] + [12345])
    assert registry.ids() == [ids[2]]


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("PYVISOR_MAX_REFS", "5")
    monkeypatch.setenv("PYVISOR_REF_TTL", "2.5")
    monkeypatch.setenv("PYVISOR_POOL", "pool-x")
    monkeypatch.setenv("PYVISOR_SLOT", "4")
    monkeypatch.setenv("PYVISOR_GENERATION", "11")
    registry = Registry.from_env()
    assert (registry.max_refs, registry.ttl) == (5, 2.5)
    payload = registry.register(Thing(), None)
    assert (payload["pool"], payload["slot"], payload["generation"]) == ("pool-x", 4, 11)


@pytest.mark.parametrize("max_refs, ttl, expected", [
    (None, None, (refs.DEFAULT_MAX_REFS, 0.0)),
    ("", "0", (refs.DEFAULT_MAX_REFS, 0.0)),
    ("0", "-1", (refs.DEFAULT_MAX_REFS, 0.0)),
    ("junk", "junk", (refs.DEFAULT_MAX_REFS, 0.0)),
    ("7", "nan", (7, 0.0)),
])
def test_unusable_limits_fall_back_to_the_defaults(monkeypatch, max_refs, ttl, expected):
    for name, raw in (("PYVISOR_MAX_REFS", max_refs), ("PYVISOR_REF_TTL", ttl)):
        if raw is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, raw)
    assert refs.limits_from_env() == expected

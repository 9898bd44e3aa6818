"""Engines: the registry of what runs a model's forward passes (nucseg_utils/model/engines.py):
how ``auto`` and a named engine resolve, what a missing library or an unknown name says, and
the exact engine every published number is computed with."""
import numpy as np
import pytest

from nucseg_utils.model import engines


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(engines, "_gpu", lambda: False)
    monkeypatch.delenv("NUCSEG_ENGINE", raising=False)


@pytest.fixture
def missing(monkeypatch):
    """An engine registered for this test only, whose library cannot be imported."""
    engine = engines.Engine("needs-a-library", "a stand-in", engines._tensorflow,
                            requires="nucseg_no_such_library", auto=-1)
    monkeypatch.setitem(engines.ENGINES, engine.name, engine)
    return engine


def test_auto_takes_the_first_engine_by_its_order_that_can_run_here(no_gpu, missing):
    # the stand-in comes first in the auto order but cannot run: it is passed over
    first = min((e for e in engines.ENGINES.values() if e.auto is not None
                 and e.available() is None), key=lambda e: e.auto)
    assert engines.resolve("auto") == engines.resolve(None) == first.name
    assert missing.available() and "nucseg_no_such_library" in missing.available()


def test_auto_is_tensorflow_on_a_gpu(monkeypatch):
    monkeypatch.setattr(engines, "_gpu", lambda: True)
    monkeypatch.delenv("NUCSEG_ENGINE", raising=False)
    assert engines.resolve() == "tensorflow"


def test_the_environment_names_the_engine_when_the_caller_does_not(no_gpu, monkeypatch):
    monkeypatch.setenv("NUCSEG_ENGINE", "TensorFlow")
    assert engines.resolve() == "tensorflow"
    assert engines.resolve("auto") != "needs-a-library"


def test_an_unknown_engine_is_refused_with_the_choices(no_gpu):
    with pytest.raises(engines.EngineError, match="choose from auto, ") as err:
        engines.resolve("cuda-magic")
    assert all(name in str(err.value) for name in engines.ENGINES)


def test_an_engine_whose_library_is_missing_says_how_to_install_it(no_gpu, missing):
    with pytest.raises(engines.EngineError, match="pip install nucseg_no_such_library"):
        engines.resolve("needs-a-library")


def test_a_published_number_is_computed_by_an_exact_engine():
    for name, engine in engines.ENGINES.items():
        if engine.available() is not None:
            continue
        exact = engines.exact(name)
        assert engines.ENGINES[exact].exact
        assert exact == (engine.exact_as or name)


def test_the_tensorflow_engine_runs_the_network_as_keras_does():
    """The registry's ``build`` gives the network's own forward pass for ``tensorflow``."""
    calls = []

    class Network:
        def __call__(self, batch, training):
            calls.append(training)
            return type("T", (), {"numpy": lambda s: np.asarray(batch) * 2})()

    forward, name = engines.build(Network(), "tensorflow")
    assert name == "tensorflow" and calls == []
    np.testing.assert_array_equal(forward(np.ones((1, 4, 4, 3))), np.full((1, 4, 4, 3), 2.0))
    assert calls == [False]  # inference mode: no dropout, no batch-norm updates

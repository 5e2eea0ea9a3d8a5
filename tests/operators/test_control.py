"""Control operators: Probabilistic, Select, Sequential."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from datarax import Pipeline
from datarax.operators import (
    ElementOperator,
    Probabilistic,
    Resize,
    Select,
    Sequential,
)
from datarax.sources import MemorySource

N = 400


def add(value: float) -> ElementOperator:
    return ElementOperator(lambda r, key: {**r, "x": r["x"] + value})


def pipeline(stages, batch_size=N) -> Pipeline:
    return Pipeline(
        source=MemorySource({"x": np.zeros((N, 2), np.float32)}),
        stages=stages,
        batch_size=batch_size,
        num_epochs=None,
        rngs=nnx.Rngs(5),
    )


def served(stages, batch_size=N) -> np.ndarray:
    pipe = pipeline(stages, batch_size)
    return np.concatenate(
        [np.asarray(pipe.step()["x"][:, 0]) for _ in range(N // batch_size)]
    )


def test_probabilistic_applies_to_a_share_p_of_records_the_same_at_any_batch_size():
    assert (served([Probabilistic(add(1.0), p=0.0)]) == 0).all()
    assert (served([Probabilistic(add(1.0), p=1.0)]) == 1).all()
    half = served([Probabilistic(add(1.0), p=0.5)])
    assert set(half.tolist()) == {0.0, 1.0}
    assert 0.4 < half.mean() < 0.6
    np.testing.assert_array_equal(half, served([Probabilistic(add(1.0), 0.5)], 80))


def test_select_draws_each_records_operator_by_weight():
    assert (served([Select([add(1.0), add(2.0)], weights=[1, 0])]) == 1).all()
    chosen = served([Select([add(1.0), add(2.0)], weights=[1, 3])])
    assert set(chosen.tolist()) == {1.0, 2.0}
    assert 0.67 < (chosen == 2).mean() < 0.83
    np.testing.assert_array_equal(
        chosen, served([Select([add(1.0), add(2.0)], weights=[1, 3])], 100)
    )


def test_sequential_applies_in_order_and_nests():
    double = ElementOperator(lambda r, key: {**r, "x": r["x"] * 2})
    assert (served([Sequential([add(1.0), double])], 100) == 2).all()
    nested = Probabilistic(Sequential([add(1.0), add(1.0)]), p=1.0)
    assert (served([nested], 100) == 2).all()


@pytest.mark.parametrize(
    ("build", "kind", "message"),
    [
        (lambda: Probabilistic(add(1.0), p=-0.1), ValueError,
         "Probabilistic: p is a probability, between 0 and 1; got -0.1."),
        (lambda: Probabilistic("flip", p=0.5), TypeError,
         "Probabilistic takes one operator, a callable batch -> batch (an instance, "
         "not a class), got 'flip'."),
        (lambda: Select([]), TypeError,
         "Select takes a non-empty list of operators, got []."),
        (lambda: Select([add(1.0), add(2.0)], weights=[0, 0]), ValueError,
         "Select: weights must be 2 finite numbers >= 0 (one per operator) with a "
         "positive sum, got [0, 0]."),
        (lambda: Select([add(1.0), add(2.0)], weights=[1.0]), ValueError,
         "Select: weights must be 2 finite numbers >= 0 (one per operator) with a "
         "positive sum, got [1.0]."),
        (lambda: Select([add(1.0), add(2.0)], weights=[2, -1]), ValueError,
         "Select: weights must be 2 finite numbers >= 0 (one per operator) with a "
         "positive sum, got [2, -1]."),
    ],
)  # fmt: skip
def test_bad_control_arguments_are_refused(build, kind, message):
    with pytest.raises(kind) as info:
        build()
    assert info.exconly() == f"{kind.__name__}: {message}"


def test_an_operator_that_changes_the_records_form_cannot_be_probabilistic():
    pipe = Pipeline(
        source=MemorySource({"image": np.zeros((4, 8, 8, 3), np.float32)}),
        stages=[Probabilistic(Resize(4, 4), p=0.5)],
        batch_size=4,
    )
    with pytest.raises(ValueError) as info:
        pipe.step()
    assert str(info.value) == (
        "Probabilistic: Resize changes the records from {'image': ((4, 8, 8, 3), "
        "'float32')} to {'image': ((4, 4, 4, 3), 'float32')}; a record it is not "
        "applied to keeps its input form, so it must keep every field's shape and "
        "dtype (resize or cast in a stage of its own)."
    )

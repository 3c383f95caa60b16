"""river's drift detectors fed from ticks: one generic wrapper, and the tick's errors as a 0/1 sequence.

`RiverTicks` does all the work for any river detector; the named classes (`ADWINTicks`, `DDMTicks`,
`EDDMTicks`, `HDDMATicks`, `HDDMWTicks`) only pick the river class, so `TickChangeDetector` can name a
method by class and restore it from a checkpoint without knowing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray
from river import drift
from river.base import DriftDetector

from driftline.detectors.sequential import river_state


def spread_errors(labeled: int, errors: int) -> NDArray[np.int64]:
    """The 0/1 sequence a tick's error count stands for: `errors` ones spread evenly over `labeled` events.

    A tick keeps counts, not order, so the order is chosen: position i is an error iff
    floor((i + 1) * errors / labeled) > floor(i * errors / labeled). That is a constant error rate within
    the tick, deterministic, and it never front- or back-loads errors (which would bias detection by up
    to one tick either way).

    >>> spread_errors(10, 3).tolist()
    [0, 0, 0, 1, 0, 0, 1, 0, 0, 1]
    """
    if not 0 <= errors <= labeled:
        raise ValueError("need 0 <= errors <= labeled")
    i = np.arange(labeled + 1, dtype=np.int64)
    return np.diff(i * errors // max(labeled, 1))


class RiverTicks:
    """Feeds the river detector `river_class` from ticks and remembers where in the fed sequence it fired.

    A tick gives it either one value (`update`, e.g. a standardised tick mean) or its labelled outcomes
    (`update_errors`, as `spread_errors(labeled, errors)`). Detections are positions in everything fed so
    far (`n_fed` counts it). The change point is where the window ADWIN keeps after a cut begins, None for
    the other detectors (they keep no window). State is data only (`river_state`): the river detector's
    attributes by name, checked field by field on restore, so a tampered checkpoint is refused, never run.

    Parameters
    ----------
    params
        Keyword arguments of `river_class`.

    Examples
    --------
    The named subclasses fix `river_class`: river's ADWIN on per-tick statistics, its binary detectors on
    a tick's error sequence.

    >>> adwin = ADWINTicks(delta=0.002)
    >>> next(t for t, z in enumerate([0.0, 0.1, -0.1] * 20 + [3.0] * 40) if adwin.update(z)), adwin.change_points
    (95, [48])
    >>> for method, wrapper in ERROR_DETECTORS.items():
    ...     det = wrapper()
    ...     print(method, [t for t, e in enumerate([10] * 10 + [90] * 3) if det.update_errors(100, e)])
    ddm [10]
    eddm [11]
    hddm_a [10]
    hddm_w [10]

    References
    ----------
    [^1]: A. Bifet and R. Gavalda. 2007. Learning from time-changing data with adaptive windowing. In
    Proceedings of the 2007 SIAM International Conference on Data Mining. (ADWIN: `delta` bounds the chance
    that a cut is spurious.)
    [^2]: J. Gama, P. Medas, G. Castillo and P. Rodrigues. 2004. Learning with Drift Detection. SBIA 2004,
    286-295. (DDM: alarms when p + s exceeds p_min + 3 s_min by default.)
    [^3]: M. Baena-Garcia, J. del Campo-Avila, R. Fidalgo, A. Bifet, R. Gavalda and R. Morales-Bueno. 2006.
    Early Drift Detection Method. Fourth International Workshop on Knowledge Discovery from Data Streams.
    (EDDM: watches the distance between errors shrinking.)
    [^4]: I. Frias-Blanco, J. del Campo-Avila, G. Ramos-Jimenez et al. 2015. Online and non-parametric drift
    detection methods based on Hoeffding's bounds. IEEE TKDE 27, 3, 810-823. (HDDM_A: Hoeffding bound on
    averages; HDDM_W: McDiarmid bound on an EWMA.)
    """

    river_class: ClassVar[type[DriftDetector]]

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.detector = self.river_class(**params)
        self.n_fed = 0
        self.detections: list[int] = []
        self.change_points: list[int | None] = []
        self.drift_detected = False

    def _change_point(self, position: int) -> int | None:
        if isinstance(self.detector, drift.ADWIN):
            return position - int(self.detector.width) + 1
        return None

    def feed(self, values: Iterable[float]) -> bool:
        """Feed values in order; True when the detector fired on any of them."""
        self.detections, self.change_points = [], []
        for x in values:
            self.detector.update(x)
            if self.detector.drift_detected:
                self.detections.append(self.n_fed)
                self.change_points.append(self._change_point(self.n_fed))
            self.n_fed += 1
        self.drift_detected = bool(self.detections)
        return self.drift_detected

    def update(self, x: float) -> bool:
        """Feed one per-tick value (e.g. a standardised tick mean)."""
        return self.feed((x,))

    def update_errors(self, labeled: int, errors: int) -> bool:
        """Feed a tick's labelled outcomes as the 0/1 error sequence `spread_errors(labeled, errors)`."""
        return self.feed(spread_errors(labeled, errors).tolist())

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state: parameters, counters and the river detector's attributes (`river_state.dump`)."""
        return {
            "params": self.params,
            "n_fed": self.n_fed,
            "detections": self.detections,
            "change_points": self.change_points,
            "detector": river_state.dump(self.detector),
        }

    @classmethod
    def from_state(cls, state: object) -> Self:
        """The detector `state_dict` saved; raises `ValueError` naming the field when ``state`` is not one."""
        if type(state) is not dict or state.keys() != {"params", "n_fed", "detections", "change_points", "detector"}:
            raise ValueError("river state refused: must be an object of params, n_fed, detections, "
                             "change_points and detector")
        obj = cls.__new__(cls)
        obj.params = state["params"]
        obj.detector = river_state.build(cls.river_class, obj.params)
        river_state.load_into(obj.detector, state["detector"])
        obj.n_fed = river_state.count(state["n_fed"], "n_fed")
        obj.detections = [river_state.count(t, "detections") for t in river_state.items(state, "detections")]
        obj.change_points = [None if c is None else river_state.count(c, "change_points")
                             for c in river_state.items(state, "change_points")]
        obj.drift_detected = bool(obj.detections)
        return obj


class ADWINTicks(RiverTicks):
    """`RiverTicks` for river's ADWIN, fed per-tick statistics."""

    river_class = drift.ADWIN


class DDMTicks(RiverTicks):
    """`RiverTicks` for river's DDM, fed a tick's error sequence."""

    river_class = drift.binary.DDM


class EDDMTicks(RiverTicks):
    """`RiverTicks` for river's EDDM, fed a tick's error sequence."""

    river_class = drift.binary.EDDM


class HDDMATicks(RiverTicks):
    """`RiverTicks` for river's HDDM_A, fed a tick's error sequence."""

    river_class = drift.binary.HDDMA


class HDDMWTicks(RiverTicks):
    """`RiverTicks` for river's HDDM_W, fed a tick's error sequence."""

    river_class = drift.binary.HDDMW


ERROR_DETECTORS: Mapping[str, type[RiverTicks]] = {
    "ddm": DDMTicks,
    "eddm": EDDMTicks,
    "hddm_a": HDDMATicks,
    "hddm_w": HDDMWTicks,
}
"""`TickChangeDetector`'s method names for the river detectors it feeds the error sequence."""

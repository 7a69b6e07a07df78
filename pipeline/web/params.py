"""What a web search asks for, checked once for the pages and the JSON API alike.

Every value arrives as text from a URL or a form, so each check names the parameter and the
accepted range in its message: the user reads it in the page or in the API's JSON error.
Selections come through `parse_selection(..., allow_sql=False)`: the web never takes raw SQL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ..errors import UsageError
from ..search import METHODS, METRICS, SearchOptions
from ..selection import Selection, parse_selection

MAX_K = 200  # results a page shows at most in kNN mode
MAX_RANGE_ROWS = 500  # a range query's rows shown at most; more are counted, not rendered
MAX_TEXT = 500  # characters per query text
MAX_TEXTS = 5
DISTANCE_RANGE = {"cosine": (0.0, 2.0), "l2": (0.0, 2.0)}  # unit vectors: cosine distance and L2 both lie in [0, 2]
DEFAULT_RADIUS = {"cosine": 0.3, "l2": math.sqrt(2 * 0.3)}


def cosine_to_l2(distance: float) -> float:
    """The L2 distance of two unit vectors whose cosine distance is `distance` (|a-b|^2 = 2 cos_d)."""
    return math.sqrt(max(0.0, 2.0 * distance))


def l2_to_cosine(distance: float) -> float:
    return distance * distance / 2.0


def _selection_texts(values: list[str] | str | None) -> list[str]:
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [v.strip() for v in items if v and v.strip() and v.strip().lower() != "all"]


def parse_set(name: str, values: list[str] | str | None) -> Selection:
    """A key set or join set: `all` or `KIND:VALUE` parts (several must all hold)."""
    texts = _selection_texts(values)
    try:
        return parse_selection(texts, allow_sql=False)
    except UsageError as exc:
        raise UsageError(f"{name}: {exc}") from None


@dataclass
class SearchSettings:
    """The settings the start and results pages share: sets, model, metric and predicate."""

    key_set: list[str] = field(default_factory=list)
    join_set: list[str] = field(default_factory=list)
    model: str = ""
    metric: str = "cosine"
    predicate: str = "knn"  # knn | range
    k: int = 10
    radius: float | None = None
    method: str = "auto"

    def check(self) -> None:
        if self.metric not in METRICS:
            raise UsageError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.predicate not in ("knn", "range"):
            raise UsageError(f"predicate must be knn or range, got {self.predicate!r}")
        if self.method not in METHODS:
            raise UsageError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 1 <= self.k <= MAX_K:
            raise UsageError(f"k must be between 1 and {MAX_K}, got {self.k}")
        low, high = DISTANCE_RANGE[self.metric]
        if self.predicate == "range":
            if self.radius is None:
                raise UsageError("radius is required for a range predicate")
            if not (math.isfinite(self.radius) and low <= self.radius <= high):
                raise UsageError(f"radius must be between {low:g} and {high:g} for {self.metric} distance, "
                                 f"got {self.radius}")
        elif self.radius is not None and not (math.isfinite(self.radius) and low <= self.radius <= high):
            raise UsageError(f"radius must be between {low:g} and {high:g} for {self.metric} distance, got {self.radius}")

    @property
    def key_selection(self) -> Selection:
        return parse_set("key set", self.key_set)

    @property
    def join_selection(self) -> Selection:
        return parse_set("join set", self.join_set)

    def options(self) -> SearchOptions:
        """The search library's options (a range query returns every photo within the radius)."""
        self.check()
        within = self.join_selection
        self.key_selection  # noqa: B018 - checked here so a bad key set fails the request, not only the gallery
        radius = self.radius if self.predicate == "range" else None
        return SearchOptions(k=self.k, metric=self.metric, radius=radius, method=self.method, within=within)

    @property
    def slider_radius(self) -> float:
        """The threshold the range slider shows: the one asked for, else a default that fits the metric."""
        return self.radius if self.radius is not None else DEFAULT_RADIUS.get(self.metric, 0.3)

    def query_items(self) -> list[tuple[str, Any]]:
        """The settings as URL parameters, so links (a result made the new key) keep them."""
        items: list[tuple[str, Any]] = [("key_set", v) for v in self.key_set] + [("join_set", v) for v in self.join_set]
        if self.model:
            items.append(("model", self.model))
        items += [("metric", self.metric), ("predicate", self.predicate), ("k", self.k)]
        if self.radius is not None:
            items.append(("radius", f"{self.radius:g}"))
        if self.method != "auto":
            items.append(("method", self.method))
        return items

    def query_string(self, **extra: Any) -> str:
        items = [(k, v) for k, v in extra.items() if v not in (None, "")] + self.query_items()
        return urlencode(items)


def clean_texts(name: str, values: list[str] | None) -> list[str]:
    texts = [v.strip() for v in values or [] if v and v.strip()]
    if len(texts) > MAX_TEXTS:
        raise UsageError(f"{name}: at most {MAX_TEXTS} texts, got {len(texts)}")
    for text in texts:
        if len(text) > MAX_TEXT:
            raise UsageError(f"{name}: a text may have at most {MAX_TEXT} characters, got {len(text)}")
    return texts
